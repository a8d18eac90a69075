#!/usr/bin/env bash
# The whole pipeline, as far as it exists, on the embedded synthetic world.
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
echo; echo "demo outputs are in $RUN"
