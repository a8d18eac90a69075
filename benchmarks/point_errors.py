"""Where a teacher's prompted masks go wrong on the synthetic validation split, and how much a
class prompt could fix (the headroom behind seed 001 Table 5's class-aware gain).

For every validation instance the teacher is prompted as ``teacher_table.py`` prompts it (one
GT-simulated point, or the GT box), and its error pixels are split into GT pixels missed and
spill onto a same-class instance, an other-class instance or background
(``pseudolabel.evaluation.teacher.error_breakdown``). A class prompt can tell the teacher
not to spill onto an object of another class; the last figure is the mIoU had all of that
spill been ruled out, an upper bound on what the class-aware path can add here.

    python benchmarks/point_errors.py                                   # shipped SAM, zero-shot
    python benchmarks/point_errors.py --teacher runs/bench/synthetic-10pct/teacher/point/teacher \
        --teacher runs/bench/synthetic-10pct/teacher/point-cls/teacher
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.evaluation.teacher import (  # noqa: E402
    ERROR_KINDS,
    error_breakdown,
    gt_prompts,
    mask_iou,
    predict_prompted,
)
from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.teacher.model import load_base_sam, load_teacher  # noqa: E402


def breakdown(teacher: PromptedSam, class_aware: bool, gt, image_root, prompt: str,
              max_images: int | None) -> dict[str, np.ndarray]:
    rows = {c: r for r, c in enumerate(gt.category_ids)}
    parts: dict[str, list] = {}
    images = gt.images[:max_images] if max_images else gt.images
    for img in tqdm(images, desc="teacher errors", unit="img"):
        anns, masks, boxes, points = gt_prompts(gt, img["id"], 0)
        if not anns:
            continue
        cats = [a["category_id"] for a in anns]
        emb = teacher.encode([load_image(resolve_image_path(image_root, img["file_name"]))])
        pred, _ = predict_prompted(teacher, emb, prompt, boxes, points,
                                   [rows[c] for c in cats] if class_aware else None)
        got = error_breakdown(pred, masks, cats) | {"iou": mask_iou(pred, masks),
                                                    "category": np.asarray(cats)}
        for k, v in got.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def report(name: str, r: dict[str, np.ndarray], gt) -> float:
    errors = sum(r[k].sum() for k in ERROR_KINDS)
    shares = ", ".join(f"{k} {r[k].sum() / errors:.2f}" for k in ERROR_KINDS)
    print(f"\n{name}: {len(r['iou'])} instances, mIoU {r['iou'].mean():.3f}")
    print(f"  error pixels: {shares}")
    print(f"  mIoU with the other-class spill ruled out: "
          f"{r['iou_without_other_class_spill'].mean():.3f} "
          f"(+{r['iou_without_other_class_spill'].mean() - r['iou'].mean():.3f})")
    pred_area = r["intersection"] + sum(r[k] for k in ERROR_KINDS[1:])
    precision = np.divide(r["intersection"], pred_area, out=np.zeros(len(pred_area)),
                          where=pred_area > 0)
    recall = r["intersection"] / np.maximum(r["area"], 1)
    print(f"  {'class':<10}{'n':>5}{'mIoU':>7}{'prec':>7}{'recall':>7}")
    for c in gt.category_ids:
        k = r["category"] == c
        if k.any():
            print(f"  {gt.category_by_id[c]['name']:<10}{k.sum():>5}{r['iou'][k].mean():>7.3f}"
                  f"{precision[k].mean():>7.2f}{recall[k].mean():>7.2f}")
    return float(r["iou_without_other_class_spill"].mean() / max(r["iou"].mean(), 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", action="append", default=[],
                    help="a trained teacher (<run_dir>/teacher/<name>/teacher); repeatable; "
                         "default: the config's SAM, zero-shot")
    ap.add_argument("--prompt", default="point", choices=("point", "box", "box+point"))
    ap.add_argument("--config", default=None, help="default: the synthetic world")
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()

    cfg = load_config(args.config)
    data = ensure_data(cfg)
    gt = load_coco(data.val)
    print(f"hardware: {hardware()}")
    print(f"{data.val}, prompt: {args.prompt}")
    with torch.inference_mode():
        if not args.teacher:
            sam = load_base_sam(cfg.models.sam, cfg.models.sam_checkpoint)
            ratio = report("zero-shot", breakdown(PromptedSam(sam), False, gt, data.images,
                                                  args.prompt, args.max_images), gt)
        for stem in args.teacher:
            teacher, meta = load_teacher(stem)
            ratio = report(f"{stem} ({meta['kind']})",
                           breakdown(teacher, meta["class_aware"], gt, data.images, args.prompt,
                                     args.max_images), gt)
    # the last teacher's: mIoU with the other-class spill ruled out / its mIoU
    print(f"class-prompt ceiling ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
