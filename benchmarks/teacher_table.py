"""Seed 001 Table 5 on the synthetic world: teacher mIoU, zero-shot vs fine-tuned, class-aware
vs not, for point and box prompts (10% fully labelled, shipped foundation SAM).

Trains the teachers it needs in ``runs/bench/synthetic-10pct`` (resumable; shared with
``pseudo_table.py``), then scores them on the validation instances with GT-simulated prompts.
Table 5's "point + GDino" column is the point+class pipeline (P-SAM, Grounding DINO boxes,
Algorithm 1, BP-SAM) run on the validation images with one GT-simulated point per instance,
scored per instance; it needs detector weights (``pseudolabel/assets`` or the config) and
is "-" without them, and for the row without the class module (no BP-SAM ablation is
trained). Box prompts (the box column, BP-SAM's boxes) are decoded as generate decodes them:
zoomed per the config's ``generate.zoom_context`` unless ``--zoom-context`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco, save_json  # noqa: E402
from pseudolabel.evaluation.pseudo import evaluate_pseudo  # noqa: E402
from pseudolabel.stages.generate import (  # noqa: E402
    GenerateOptions,
    generate,
    load_detector,
    load_run_teachers,
)
from pseudolabel.stages.model_eval import evaluate_run_teachers  # noqa: E402
from pseudolabel.stages.teacher_finetune import finetune_teachers  # noqa: E402
from pseudolabel.stages.weaken import weaken  # noqa: E402
from pseudolabel.teacher.train import FinetuneConfig  # noqa: E402


def point_gdino(cfg, data, run_dir: Path, zero_shot: bool, zoom) -> float | None:
    """mIoU of the point+class pipeline on the val images (every image weakly labelled)."""
    try:
        detector, detector_sha = load_detector(cfg.models)
    except ValueError:
        return None
    gt = load_coco(data.val)
    work = run_dir / "val-point-gdino"
    weak = work / "weak.json"
    if not weak.is_file():
        save_json(weak, weaken(gt, "point+class", 0.0, seed=0)[0])
    teachers = load_run_teachers(run_dir, "point+class", gt.category_ids, zero_shot=zero_shot,
                                 sam_model=cfg.models.sam,
                                 sam_checkpoint=cfg.models.sam_checkpoint)
    out = work / f"pseudo{'-zero-shot' if zero_shot else ''}{'-zoom' if zoom.on else ''}.json"
    # the teachers come from run_dir; parts and split checks live in the val work folder
    generate(weak, data.images, work,
             GenerateOptions("point+class", zero_shot=zero_shot, zoom=zoom),
             teachers, detector, detector_sha=detector_sha,
             out_path=out, progress=False)
    return evaluate_pseudo(load_coco(out), gt)["mIoU"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=None, help="default: the config's")
    ap.add_argument("--lr", type=float, default=None, help="default: the config's")
    ap.add_argument("--class-lr-factor", type=float, default=None,
                    help="lr multiplier of the class path (default: the config's)")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/synthetic-10pct"))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--zoom-context", type=float, default=None,
                    help="box prompts on zoomed crops (0: whole image; default: the config's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(None)
    data = ensure_data(cfg)
    tcfg = asdict(cfg.teacher)
    for key in ("steps", "lr", "class_lr_factor"):
        if getattr(args, key) is not None:
            tcfg[key] = getattr(args, key)
    if args.lr is not None:
        tcfg["lr_final"] = args.lr / 10
    t0 = time.perf_counter()
    common = dict(gt_path=data.train, image_root=data.images, fraction=args.fraction,
                  sam_model=cfg.models.sam, sam_checkpoint=cfg.models.sam_checkpoint,
                  cfg=FinetuneConfig(**tcfg))
    # class-aware teachers (BP-SAM too, for the point + Grounding DINO column), and the
    # ablation without the class module (box-cls -> box, point-cls -> point)
    finetune_teachers(run_dir=args.run_dir, teachers=("box-cls", "point-cls", "boxpoint-cls"),
                      **common)
    finetune_teachers(run_dir=args.run_dir, teachers=("box-cls", "point-cls"),
                      class_aware=False, **common)
    train_s = time.perf_counter() - t0
    zoom = cfg.generate.zoom(args.zoom_context)
    r = evaluate_run_teachers(args.run_dir, data.val, data.images, args.max_images,
                              zoom=zoom)["mIoU"]
    gd_zero = point_gdino(cfg, data, args.run_dir, zero_shot=True, zoom=zoom)
    gd_tuned = point_gdino(cfg, data, args.run_dir, zero_shot=False, zoom=zoom) \
        if gd_zero is not None else None
    rows = {
        "zero-shot": (r["zero-shot"].get("point"), gd_zero, r["zero-shot"].get("box")),
        "fine-tuned": (r["point"]["point"], None, r["box"]["box"]),
        "fine-tuned, class-aware": (r["point-cls"]["point"], gd_tuned, r["box-cls"]["box"]),
    }
    print(f"hardware: {hardware()}")
    print(f"synthetic default, {args.fraction:.0%} fully labelled, {tcfg['steps']} steps per "
          f"teacher, lr {tcfg['lr']:g} (class path x{tcfg['class_lr_factor']:g}); training "
          f"{train_s:.0f} s; box prompts "
          + (f"zoomed (context {zoom.context:g})" if zoom.on else "on the whole image"))
    print(f"{'teacher':<26}{'point':>8}{'point+GDino':>13}{'box':>8}")
    for name, (point, gd, box) in rows.items():
        gd_text = f"{gd:13.3f}" if gd is not None else f"{'-':>13}"
        print(f"{name:<26}{point:8.3f}{gd_text}{box:8.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "raw": r}, indent=2))
    zero, tuned = rows["zero-shot"][0], rows["fine-tuned, class-aware"][0]
    print(f"fine-tuned class-aware / zero-shot point mIoU ratio: {tuned / zero:.2f}")


if __name__ == "__main__":
    main()
