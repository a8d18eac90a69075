"""Pseudo-mask quality per weak setting on the synthetic default (seed 001 Tables 2, 4, 5).

At 10% fully labelled with the shipped foundation weights: trains the four teachers once in
``runs/bench/synthetic-10pct`` (shared with ``teacher_table.py``; resumable), generates
pseudo-masks for every setting with the fine-tuned teachers and with the base SAM
(``--zero-shot``), and point+class without prompt refinement (``--no-refine``), then scores
each file on the weakly labelled training images (mIoU per GT instance, unmatched GT = 0).
Settings that need Grounding DINO are skipped, with the reason, when no detector weights are
available. Box prompts are zoomed as the config's ``generate.zoom_context`` says (the
synthetic default: 3) unless ``--zoom-context`` says otherwise.
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
    SETTINGS,
    GenerateOptions,
    generate,
    load_detector,
    load_run_teachers,
)
from pseudolabel.stages.teacher_finetune import finetune_teachers  # noqa: E402
from pseudolabel.stages.weaken import weaken  # noqa: E402
from pseudolabel.teacher.train import FinetuneConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/synthetic-10pct"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--detector-checkpoint", default=None,
                    help="Grounding DINO weights (default: the config's, i.e. the shipped ones)")
    ap.add_argument("--zoom-context", type=float, default=None,
                    help="box prompts on zoomed crops (0: whole image; default: the config's)")
    args = ap.parse_args()

    cfg = load_config(None)
    zoom = cfg.generate.zoom(args.zoom_context)
    data = ensure_data(cfg)
    gt = load_coco(data.train)
    t0 = time.perf_counter()
    finetune_teachers(gt_path=data.train, image_root=data.images, run_dir=args.run_dir,
                      fraction=args.fraction, sam_model=cfg.models.sam,
                      sam_checkpoint=cfg.models.sam_checkpoint,
                      cfg=FinetuneConfig(**asdict(cfg.teacher)))
    train_s = time.perf_counter() - t0
    detector = detector_sha = None
    why_no_detector = ""
    try:
        detector, detector_sha = load_detector(cfg.models, args.detector_checkpoint)
    except ValueError as exc:
        why_no_detector = str(exc).splitlines()[0]

    rows: dict[str, dict] = {}
    runs = [(s, True, False) for s in SETTINGS] + [("point+class", False, False)] + \
        [(s, True, True) for s in SETTINGS] + [("point+class", False, True)]
    for setting, refine, zero_shot in runs:
        label = setting + ("" if refine or setting != "point+class" else " --no-refine") + \
            (" --zero-shot" if zero_shot else "")
        needs_detector = setting in ("none", "class") or (setting == "point+class" and refine)
        if needs_detector and detector is None:
            rows[label] = {"skipped": why_no_detector}
            continue
        weak_path = args.run_dir / "weak" / f"{setting}.json"
        if not weak_path.is_file():
            save_json(weak_path, weaken(gt, setting, args.fraction, seed=0)[0])
        teachers = load_run_teachers(args.run_dir, setting, gt.category_ids, refine=refine,
                                     zero_shot=zero_shot, sam_model=cfg.models.sam,
                                     sam_checkpoint=cfg.models.sam_checkpoint)
        out = args.run_dir / "pseudo" / (label.replace(" --", "-").replace("+", "_")
                                         + ("-zoom" if zoom.on else "") + ".json")
        t = time.perf_counter()
        summary = generate(weak_path, data.images, args.run_dir,
                           GenerateOptions(setting, refine=refine, zero_shot=zero_shot,
                                           zoom=zoom),
                           teachers, detector if needs_detector else None,
                           detector_sha=detector_sha, out_path=out, progress=False)
        seconds = time.perf_counter() - t
        r = evaluate_pseudo(load_coco(out), gt)
        made = summary["generated_images"]  # 0 when every part was already on disk
        rows[label] = {"mIoU": r["mIoU"], "mask_AP": r["segm"]["AP"],
                       "pseudo_masks": summary["pseudo_masks"],
                       "images_per_s": made / seconds if made else None}

    print(f"hardware: {hardware()}")
    print(f"synthetic default, {args.fraction:.0%} fully labelled, teachers {cfg.teacher.steps} "
          f"steps each (training {train_s:.0f} s); pseudo-masks scored on the weakly "
          f"labelled training images; box prompts "
          + (f"zoomed (context {zoom.context:g})" if zoom.on else "on the whole image"))
    print(f"{'setting':<38}{'mIoU':>7}{'mask AP':>9}{'masks':>7}{'img/s':>7}")
    for label, r in rows.items():
        if "skipped" in r:
            print(f"{label:<38}  skipped: needs Grounding DINO")
        else:
            speed = f"{r['images_per_s']:7.1f}" if r["images_per_s"] else "      -"
            print(f"{label:<38}{r['mIoU']:7.3f}{r['mask_AP']:9.1f}{r['pseudo_masks']:7d}{speed}")
    if why_no_detector:
        print(f"(no detector: {why_no_detector})")
    print("img/s: '-' when the pseudo-masks were already on disk from an earlier run")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
