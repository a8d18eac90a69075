"""SeSAM (seed 004) on the synthetic world, with the shipped tiny SAM.

Pseudo-map quality against the fine maps of the training images (mIoU, F1; seed 004 Fig. 6-7):

* by weak label: point / scribble / coarse (points, skeleton sampling, per component);
* by prompt (scribbles): points vs the component's box vs the component as a mask (Fig. 8);
* per component vs per class (Fig. 2 left), skeleton vs random point sampling (Fig. 2 middle);
* points per component N = 1, 3, 5, 9 (Fig. 6) and the selection weights (tau1, tau2)
  (Fig. 7), as precision and recall of the scribble pseudo-maps;
* the weak label alone, unlabelled pixels as background (what SAM adds).

Then DeepLabV3+ students (tiny preset, ``--steps``): on the scribble pseudo-maps and on the
fully labelled maps; val mIoU. Last, the labelling budget of each weak kind as a share of
fine maps, from the timings of ``pseudolabel semantic-cost``. Every stage resumes from
``--run-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.semantic.labels import (  # noqa: E402
    BACKGROUND,
    IGNORE,
    read_label_map,
    write_label_map,  # noqa: E402
)
from pseudolabel.semantic.student import SemanticConfig, train_semantic  # noqa: E402
from pseudolabel.stages.cost import semantic_labelling_cost  # noqa: E402
from pseudolabel.stages.refine import load_refiner  # noqa: E402
from pseudolabel.stages.semantic import (  # noqa: E402
    evaluate_semantic,
    map_name,
    sam_maps,
    score_maps,
    weaken_semantic,
)


def weak_only(gt, weak_dir: Path, out: Path) -> Path:
    """The weak label with every unlabelled pixel as background (no SAM)."""
    for img in gt.images:
        name = map_name(img["file_name"])
        if not (out / name).is_file():
            w = read_label_map(weak_dir / name)
            write_label_map(out / name, np.where(w == IGNORE, BACKGROUND, w).astype(np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/sesam"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(None)
    data = ensure_data(cfg)
    gt = load_coco(data.train)
    run = args.run_dir
    sam = load_refiner(cfg.models.sam, cfg.models.sam_checkpoint)
    for kind in ("point", "scribble", "coarse", "fine"):
        weaken_semantic(data.train, run / "weak" / kind, kind, fine=kind == "fine",
                        progress=False)
    rows = {}

    def maps(label, kind="scribble", **kw):
        out = run / "maps" / label
        sam_maps(data.train, run / "weak" / kind, data.images, out, sam, progress=False, **kw)
        rows[label] = score_maps(data.train, out)
        print(f"{label:<34} mIoU {rows[label]['mIoU']:.3f}  F1 {rows[label]['fg_F1']:.3f}",
              flush=True)
        return out

    for kind in ("point", "scribble", "coarse"):
        maps(f"{kind}, points, per component", kind)
        out = weak_only(gt, run / "weak" / kind, run / "maps" / f"{kind} alone")
        rows[f"{kind} alone (no SAM)"] = score_maps(data.train, out)
    maps("scribble, box prompt", prompt="box")
    maps("scribble, mask prompt", prompt="mask")
    maps("scribble, points, per class", per="class")
    maps("scribble, random points", sampling="random")
    for n in (1, 3, 9):  # N = 5 is the per-component row above
        maps(f"scribble, N = {n}", n_points=n)
    for taus in ((0.1, 0.9), (0.5, 0.5), (0.7, 0.3)):  # (0.3, 0.7) is the default row
        maps(f"scribble, taus = {taus[0]:g},{taus[1]:g}", taus=taus)

    students = {}
    scfg = SemanticConfig(steps=args.steps)
    for label, maps_dir in (("scribble pseudo-maps", run / "maps" /
                             "scribble, points, per component"),
                            ("fully labelled maps", run / "weak" / "fine")):
        trained = train_semantic(data.train, maps_dir, data.images,
                                 run / "students" / label.replace(" ", "-"), scfg,
                                 progress=False)
        students[label] = evaluate_semantic(trained["model"], data.val, data.images, scfg.size)

    print(f"hardware: {hardware()}")
    print("pseudo-maps of the synthetic training images (400) against the fine maps, shipped "
          f"SAM ({cfg.models.sam})")
    print("precision / recall / F1: per foreground class, averaged (seed 004 Fig. 6-7); "
          "pixel accuracy beside them")
    print(f"{'weak label / prompting':<34}{'mIoU':>8}{'prec':>8}{'recall':>8}{'F1':>8}"
          f"{'pix acc':>9}")
    for label, r in rows.items():
        print(f"{label:<34}{r['mIoU']:8.3f}{r['fg_precision']:8.3f}{r['fg_recall']:8.3f}"
              f"{r['fg_F1']:8.3f}{r['recall']:9.3f}")
    print(f"DeepLabV3+ (tiny), {args.steps} steps, val mIoU:")
    for label, r in students.items():
        print(f"  {label:<32}{r['mIoU']:8.3f}")
    ratio = students["scribble pseudo-maps"]["mIoU"] / max(
        students["fully labelled maps"]["mIoU"], 1e-9)
    print(f"scribble / fully labelled student mIoU ratio: {ratio:.2f}")
    costs = {kind: semantic_labelling_cost(dataset, kind)
             for dataset, kind in (("pascal", "point"), ("pascal", "scribble"),
                                   ("cityscapes", "coarse"))}
    print("labelling budget vs fine maps (per-image timings: pseudolabel semantic-cost):")
    for kind, c in costs.items():
        print(f"  {kind:<9}{100 * c['budget_share']:6.1f}%  ({c['seconds_per_image']:g} s vs "
              f"{c['seconds_per_image'] / c['budget_share']:g} s per image, {c['source']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"maps": rows, "students": students,
                                                "costs": costs}, indent=2))


if __name__ == "__main__":
    main()
