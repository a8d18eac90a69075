"""Seed 001 Table 5 on the synthetic world: teacher mIoU, zero-shot vs fine-tuned, class-aware
vs not, for point and box prompts (10% fully labelled, shipped foundation SAM).

Trains the teachers it needs in ``runs/bench/synthetic-10pct`` (resumable; shared with
``pseudo_table.py``), then scores them on the validation instances with GT-simulated prompts.
Table 5's "point + GDino" column (point+class generate on the validation images) is left out
until Grounding DINO weights ship (``pseudolabel/assets``).
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
from pseudolabel.stages.model_eval import evaluate_run_teachers  # noqa: E402
from pseudolabel.stages.teacher_finetune import finetune_teachers  # noqa: E402
from pseudolabel.teacher.train import FinetuneConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=None, help="default: the config's")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/synthetic-10pct"))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(None)
    data = ensure_data(cfg)
    tcfg = asdict(cfg.teacher)
    if args.steps is not None:
        tcfg["steps"] = args.steps
    t0 = time.perf_counter()
    common = dict(gt_path=data.train, image_root=data.images, fraction=args.fraction,
                  sam_model=cfg.models.sam, sam_checkpoint=cfg.models.sam_checkpoint,
                  cfg=FinetuneConfig(**tcfg))
    # class-aware teachers, and the ablation without the class module (box-cls -> box,
    # point-cls -> point)
    finetune_teachers(run_dir=args.run_dir, teachers=("box-cls", "point-cls"), **common)
    finetune_teachers(run_dir=args.run_dir, teachers=("box-cls", "point-cls"),
                      class_aware=False, **common)
    train_s = time.perf_counter() - t0
    r = evaluate_run_teachers(args.run_dir, data.val, data.images, args.max_images)["mIoU"]
    rows = {
        "zero-shot": (r["zero-shot"].get("point"), r["zero-shot"].get("box")),
        "fine-tuned": (r["point"]["point"], r["box"]["box"]),
        "fine-tuned, class-aware": (r["point-cls"]["point"], r["box-cls"]["box"]),
    }
    print(f"hardware: {hardware()}")
    print(f"synthetic default, {args.fraction:.0%} fully labelled, {tcfg['steps']} steps per "
          f"teacher; training {train_s:.0f} s")
    print(f"{'teacher':<26}{'point':>8}{'box':>8}")
    for name, (point, box) in rows.items():
        print(f"{name:<26}{point:8.3f}{box:8.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "raw": r}, indent=2))
    zero, tuned = rows["zero-shot"][0], rows["fine-tuned, class-aware"][0]
    print(f"fine-tuned class-aware / zero-shot point mIoU ratio: {tuned / zero:.2f}")


if __name__ == "__main__":
    main()
