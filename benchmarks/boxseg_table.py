"""Seed 000 Table 4 on the synthetic world: BoxSeg's ablations, box+class at 0% masks.

Every row trains a tiny CondInst from the boxes of the synthetic default's training images
with the same schedule (``--steps``), for each of ``--seeds``; rows (seed 000 Tables 4-5):

* BoxInst-style baseline (``--qam off``: projection + pairwise losses only),
* BPMA-style (BoxTeacher's assignment: the best-scoring candidate with IoU >= 0.5),
* BQR (the best-IoU candidate), + QMF (fused top-K, eq. 2), + MQS (weighted by w, eq. 5),
* + copy-paste (peer-assisted, eq. Algorithm 1).

Printed per row: student mask AP on val (mean over seeds, and each seed), the fused
pseudo-masks' mIoU on the training images (the teacher's last pass, every GT box), and the
Spearman correlation of ``w`` and of the box score ``s`` with each fused mask's true IoU
(seed 000 Thm. 3.6: ``w`` should track quality better). Every run resumes; results are kept
in ``--run-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.boxseg.trainer import BoxSegConfig, export_pseudo_masks, train_boxseg  # noqa
from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco, save_json  # noqa: E402
from pseudolabel.data.masks import rle_to_mask  # noqa: E402
from pseudolabel.evaluation.pseudo import evaluate_pseudo  # noqa: E402
from pseudolabel.stages.train_student import StudentConfig, evaluate_student  # noqa: E402
from pseudolabel.stages.weaken import weaken  # noqa: E402

ROWS = [("BoxInst-style baseline", "off", "off"), ("BPMA-style", "bpma", "off"),
        ("BQR", "bqr", "off"), ("BQR + QMF", "bqr+qmf", "off"),
        ("BQR + QMF + MQS (QAM)", "full", "off"), ("QAM + copy-paste", "full", "quality")]


def correlations(pseudo_path: Path, gt) -> dict:
    """Spearman of w and of s_hat with each fused mask's IoU with its GT mask."""
    pseudo = load_coco(pseudo_path)
    w, s, iou = [], [], []
    for a in pseudo.annotations:
        g = gt.anns_by_image[a["image_id"]]
        match = [x for x in g if x["id"] == a["weak"]["id"]]
        if not match:
            continue
        m, t = rle_to_mask(pseudo.rle(a)), rle_to_mask(gt.rle(match[0]))
        iou.append((m & t).sum() / max((m | t).sum(), 1))
        w.append(a["quality"]["w"])
        s.append(a["quality"]["box_score"])

    def rho(x):  # undefined for fewer than 3 masks or a constant score
        return float(spearmanr(x, iou).statistic) if len(iou) >= 3 and len(set(x)) > 1 \
            else float("nan")
    return {"spearman_w": rho(w), "spearman_s": rho(s), "masks": len(iou)}


def _fresh(path: Path, run: Path) -> bool:
    """``path`` exists and was written after the run's last checkpoint."""
    return path.is_file() and path.stat().st_mtime >= (run / "state.pt").stat().st_mtime


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _fmt(value: float | None) -> str:
    return f"{'-':>12}" if value is None else f"{value:12.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/boxseg"))
    ap.add_argument("--ema", type=float, default=0.99,
                    help="EMA teacher momentum (seed 000: 0.999 over 90k iterations; its "
                         "~1,000-step memory would leave a short schedule's teacher mostly "
                         "at its initial weights)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated row numbers (1-6, the table's order) to run, e.g. "
                         "to split the rows over processes; default: all")
    ap.add_argument("--only-seed", type=int, action="append", default=None, metavar="S",
                    help="run only these seeds (repeatable; each < --seeds), e.g. to run "
                         "one row's seeds in parallel processes; the table then shows them")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = sorted(set(args.only_seed)) if args.only_seed else list(range(args.seeds))
    if any(not 0 <= s < args.seeds for s in seeds):
        ap.error(f"--only-seed {args.only_seed}: each seed must be in 0..{args.seeds - 1}")
    numbers = args.rows.split(",") if args.rows else range(1, len(ROWS) + 1)
    if not all(str(i).strip() in {str(n) for n in range(1, len(ROWS) + 1)} for i in numbers):
        ap.error(f"--rows {args.rows!r}: expected row numbers 1-{len(ROWS)}, comma-separated")
    chosen = [ROWS[int(i) - 1] for i in numbers]

    cfg = load_config(None)
    data = ensure_data(cfg)
    gt = load_coco(data.train)
    weak_path = args.run_dir / "weak_box.json"
    if not weak_path.is_file():
        save_json(weak_path, weaken(gt, "box+class", 0.0, seed=0)[0])
    base = replace(StudentConfig(**(cfg.raw.get("student") or {})), arch="condinst",
                   steps=args.steps)
    rows = {}
    for label, qam, cp in chosen:
        per_seed = []
        for seed in seeds:
            out = args.run_dir / f"{qam}-{cp}-seed{seed}"
            scfg = replace(base, seed=seed)
            # progress goes to stderr, so stdout keeps only the table
            print(f"{label}, seed {seed} ({out})", file=sys.stderr, flush=True)
            summary = train_boxseg(weak_path, data.images, out, scfg,
                                   BoxSegConfig(qam=qam, copy_paste=cp, ema=args.ema))
            # a finished run's metrics and fused masks are kept (a re-run, e.g. after --rows
            # runs, only prints); they are redone when the weights are newer
            metrics_file, fused = out / "metrics.json", out / "fused.json"
            metrics = json.loads(metrics_file.read_text()) if _fresh(metrics_file, out) \
                else evaluate_student(out, data.val, data.images, progress=False)
            if not _fresh(fused, out):
                export_pseudo_masks(summary["run"], weak_path, fused, progress=False)
            quality = evaluate_pseudo(load_coco(fused), gt)
            per_seed.append({"AP": metrics["segm"]["AP"], "fused_mIoU": quality["mIoU"],
                             **correlations(fused, gt)})
        rows[label] = per_seed
        print(f"{label:<26} done: AP " + ", ".join(f"{r['AP']:.2f}" for r in per_seed),
              flush=True)

    print(f"hardware: {hardware()}")
    print(f"synthetic default, box+class at 0% masks, tiny CondInst, {args.steps} steps, "
          f"seeds {', '.join(map(str, seeds))}, EMA {args.ema} (mean; per seed in brackets)")
    print(f"{'row':<26}{'mask AP':>20}{'fused mIoU':>12}{'rho(w,IoU)':>12}{'rho(s,IoU)':>12}")
    for label, per_seed in rows.items():
        ap_ = np.mean([r["AP"] for r in per_seed])
        seeds = "/".join(f"{r['AP']:.1f}" for r in per_seed)
        # "-": no fused masks (the baseline has no teacher pass) or a constant w (one
        # candidate per box, BPMA), where the correlation is undefined
        with_masks = [r for r in per_seed if r["masks"]]
        miou = _fmt(np.mean([r["fused_mIoU"] for r in with_masks]) if with_masks else None)
        rw = _fmt(_nanmean([r["spearman_w"] for r in with_masks]))
        rs = _fmt(_nanmean([r["spearman_s"] for r in with_masks]))
        print(f"{label:<26}{ap_:8.2f} ({seeds:>9}){miou}{rw}{rs}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
