"""SAMRefiner before/after on the synthetic val set, per prompt set (seed 002 Table 1 layout).

Coarse masks: ``pseudolabel noise --level hard`` (COCO-N hard: scale, localization and
approximation noise on 90% of the instances) of the synthetic default's val split, or any
COCO file given with ``--coarse``. Each row refines every coarse mask with one prompt set
(one image encoding per image, all masks in one batch) and scores the result against GT:
mIoU per instance (matched by annotation id) and mask AP / boundary AP of the refined masks.
Class labels are taken from GT so that AP measures masks only. ``--adapter`` adds
SAMRefiner++ rows (the IoU adapter is trained first with ``refine-adapt`` on the coarse
masks themselves, no annotation). Every prompt set with a box is also run zoomed (each mask
decoded on its own crop around its box prompt; ``--zoom-context``, default the synthetic
default's 3; 0 leaves those rows out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.data.masks import rle_to_mask  # noqa: E402
from pseudolabel.evaluation.coco_eval import evaluate_masks  # noqa: E402
from pseudolabel.noise import LEVELS  # noqa: E402
from pseudolabel.stages.noise import noise_file  # noqa: E402
from pseudolabel.stages.refine import adapt_iou, load_refiner, refine_coco  # noqa: E402

ROWS = [("point",), ("box",), ("mask",), ("point", "box"), ("point", "mask"),
        ("box", "mask"), ("point", "box", "mask")]


def score(gt, path: Path) -> dict:
    """mIoU per GT instance (by id) and AP / boundary AP with GT's classes."""
    pred = load_coco(path)
    by_id = {a["id"]: a for a in pred.annotations}
    ious, preds = [], []
    for a in gt.annotations:
        if a.get("iscrowd", 0):
            continue
        g = rle_to_mask(gt.rle(a))
        p = rle_to_mask(pred.rle(by_id[a["id"]]))
        ious.append((g & p).sum() / max((g | p).sum(), 1))
        preds.append({"image_id": a["image_id"], "category_id": a["category_id"],
                      "segmentation": pred.rle(by_id[a["id"]]),
                      "score": float(by_id[a["id"]].get("refine", {}).get("predicted_iou",
                                                                           1.0))})
    ap = evaluate_masks(gt, preds)
    return {"mIoU": float(np.mean(ious)), "AP": ap["segm"]["AP"],
            "boundary_AP": ap["boundary"]["AP"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coarse", type=Path, default=None,
                    help="coarse COCO masks of the val images (default: COCO-N hard)")
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--adapter", action="store_true", help="also SAMRefiner++ rows")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--zoom-context", type=float, default=None,
                    help="zoomed rows' context (default: the config's generate.zoom_context)")
    args = ap.parse_args()

    cfg = load_config(None)
    data = ensure_data(cfg)
    zoom = cfg.generate.zoom(args.zoom_context)
    work = Path(tempfile.mkdtemp(prefix="refine-table-"))
    coarse = args.coarse
    if coarse is None:
        coarse = work / "coarse-hard.json"
        noise_file(data.val, coarse, LEVELS["hard"], name="hard", seed=0, evaluate=False,
                   progress=False)
    gt = load_coco(data.val)
    print(f"hardware: {hardware()}")
    print(f"coarse masks: {args.coarse or 'COCO-N hard of the synthetic val split'}; "
          f"shipped tiny SAM; iters {args.iters}")
    results = {"coarse": score(gt, coarse)}
    adapter = None
    if args.adapter:
        adapter = work / "adapter.safetensors"
        adapt_iou(coarse, data.images, adapter, load_refiner(), progress=False)
    variants = [(row, True, None) for row in ROWS] + [(("box",), False, None),
                                                      (ROWS[-1], False, None)]
    if adapter is not None:
        variants += [(ROWS[-1], True, adapter), (ROWS[-1], False, adapter)]
    variants = [(*v, None) for v in variants]
    if zoom.on:
        variants += [(*v[:3], zoom) for v in variants if "box" in v[0]]
    for prompts, cebox, adp, zm in variants:
        name = "+".join(prompts) + ("" if cebox or "box" not in prompts else " (tight box)")
        name += " ++" if adp else ""
        name += f" zoom {zm.context:g}" if zm else ""
        out = work / f"{len(results)}.json"
        t = time.perf_counter()
        refine_coco(coarse, data.images, out, load_refiner(adapter=adp), prompts=prompts,
                    iters=args.iters, cebox=cebox, zoom=zm, progress=False)
        results[name] = {**score(gt, out), "seconds": round(time.perf_counter() - t, 1)}
    print(f"{'masks':<36}{'mIoU':>7}{'AP':>7}{'bAP':>7}")
    for name, r in results.items():
        print(f"{name:<36}{r['mIoU']:7.3f}{r['AP']:7.1f}{r['boundary_AP']:7.1f}")
    best = max((n for n in results if n != "coarse"), key=lambda n: results[n]["mIoU"])
    ratio = results[best]["mIoU"] / results["coarse"]["mIoU"]
    print(f"best refined / coarse mIoU ratio: {ratio:.3f} ({best})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
