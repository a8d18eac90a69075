#!/usr/bin/env bash
# The whole pipeline, as far as it exists, on the embedded synthetic world (~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PL=".venv/bin/pseudolabel"
RUN=runs/demo
DATA=runs/data/synthetic

echo "== synth: the embedded synthetic world"
$PL synth --out "$DATA"

echo; echo "== weaken: simulate each weak setting with masks on 10% of the images"
for weak in none class point+class box+class; do
  $PL weaken --gt "$DATA/annotations/train.json" --weak "$weak" --fraction 0.1 \
    --out "$RUN/weak/$weak.json"
done

echo; echo "== evaluate: ground truth against itself (mask AP and boundary AP must be 100)"
$PL evaluate --pred "$DATA/annotations/val.json" --gt "$DATA/annotations/val.json" \
  --json "$RUN/eval/gt_vs_gt.json"

echo; echo "== cost: labelling hours on COCO (seed 001 Table 1)"
for weak in none class point+class box+class; do
  for fraction in 0.01 0.1; do
    $PL cost --dataset coco --weak "$weak" --fraction "$fraction"
  done
done
echo; echo "== teachers: fine-tune on the 10% split, seed 001 Table 5 (benchmarks/teacher_table.py)"
.venv/bin/python benchmarks/teacher_table.py --json "$RUN/teacher_table.json"

echo; echo "== pseudo-masks: every setting the shipped weights allow (benchmarks/pseudo_table.py)"
.venv/bin/python benchmarks/pseudo_table.py --json "$RUN/pseudo_table.json"

echo; echo "== the same from the command line: generate point+class with the run's teachers, score it"
BENCH=runs/bench/synthetic-10pct
$PL generate --weak point+class --run-dir "$BENCH" --out "$RUN/pseudo/point+class.json"
$PL evaluate --pseudo "$RUN/pseudo/point+class.json" --gt "$DATA/annotations/train.json" \
  --json "$RUN/eval/pseudo_point+class.json"

echo; echo "== student: Mask2Former on the 10% GT + point+class pseudo-masks (a short CPU schedule)"
$PL train-student --weak point+class --run-dir "$RUN" --steps "${DEMO_STUDENT_STEPS:-200}"

echo; echo "== noise: a COCO-N medium copy of the val labels, scored against the clean ones (seed 003)"
$PL noise --level medium --gt "$DATA/annotations/val.json" --out "$RUN/noise/val-medium.json" \
  --json "$RUN/noise/val-medium-summary.json"

echo; echo "== report: GT vs pseudo-mask and GT vs student pictures, AP vs labelling hours"
$PL report --run-dir "$RUN"

echo; echo "demo outputs are in $RUN"
