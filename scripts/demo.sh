#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic world (under 10 minutes on 2 cores). The
# benchmarks (benchmarks/teacher_table.py, pseudo_table.py, ...) give the full tables.
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
echo; echo "== teachers: fine-tune P-SAM and BP-SAM on the 10% split (a short schedule)"
$PL teacher-finetune --fraction 0.1 --teachers point-cls,boxpoint-cls \
  --steps "${DEMO_TEACHER_STEPS:-150}" --run-dir "$RUN"

echo; echo "== pseudo-masks: point+class (P-SAM, Grounding DINO boxes, Algorithm 1, BP-SAM), scored"
$PL generate --weak point+class --run-dir "$RUN"
$PL evaluate --pseudo "$RUN/pseudo/point+class.json" --gt "$DATA/annotations/train.json" \
  --json "$RUN/eval/pseudo_point+class.json"

echo; echo "== student: CondInst on the 10% GT + point+class pseudo-masks (a short CPU schedule)"
STEPS=${DEMO_STUDENT_STEPS:-300}
$PL train-student --weak point+class --student condinst --run-dir "$RUN" --steps "$STEPS"
# README Table 2's students from a random initialisation, as this one (CondInst, 600 steps on
# this CPU; Table 2 itself starts them from the source-world ResNet-18): point+class at 10% and
# fully supervised.
T2_POINT_AP=3.0
T2_FULL_AP=4.9
.venv/bin/python - "$RUN/student/point_class-condinst/metrics.json" "$STEPS" "$T2_POINT_AP" \
  "$T2_FULL_AP" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"student mask AP {m['segm']['AP']:.1f} after {sys.argv[2]} steps from a random init "
      f"(README Table 2, random init, 600 steps: point+class at 10% {sys.argv[3]}, fully "
      f"supervised {sys.argv[4]})")
PY

echo; echo "== noise: a COCO-N medium copy of the val labels, scored against the clean ones (seed 003)"
$PL noise --level medium --gt "$DATA/annotations/val.json" --out "$RUN/noise/val-medium.json" \
  --json "$RUN/noise/val-medium-summary.json"

echo; echo "== report: GT vs pseudo-mask and GT vs student pictures, AP vs labelling hours"
$PL report --run-dir "$RUN"

echo; echo "demo outputs are in $RUN"
