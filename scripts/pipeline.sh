#!/usr/bin/env bash
# One column of seed 001 Table 2: with masks on FRACTION of the images, simulate every weak
# setting, fine-tune the teachers, generate pseudo-masks and train a student on each, next to
# a fully supervised student.
#
#   bash scripts/pipeline.sh CONFIG FRACTION RUN_DIR [SETTING ...]
#
# CONFIG: configs/synthetic.yaml or configs/coco.yaml (checked first: every missing data file
# or checkpoint is listed and nothing runs). FRACTION 0 uses the zero-shot teachers.
# FULL_RUN (environment, default RUN_DIR) is where the fully supervised student is trained
# once and shared by several fractions. Every stage resumes, so re-running the same command
# after an interruption continues.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/pipeline.sh CONFIG FRACTION RUN_DIR [SETTING ...]" >&2
  exit 2
fi
CONFIG=$1; FRACTION=$2; RUN=$3; shift 3
SETTINGS=("$@")
[ ${#SETTINGS[@]} -eq 0 ] && SETTINGS=(none class point+class box+class)
PL=".venv/bin/pseudolabel"
FULL_RUN=${FULL_RUN:-$RUN}

echo "== check: every file $CONFIG names"
$PL check-config --config "$CONFIG"

echo; echo "== fully supervised student (the 100% row)"
$PL train-student --full --config "$CONFIG" --run-dir "$FULL_RUN"
if [ "$FULL_RUN" != "$RUN" ]; then
  mkdir -p "$RUN/student/full-mask2former"
  cp "$FULL_RUN/student/full-mask2former/metrics.json" "$RUN/student/full-mask2former/"
fi

ZERO=()
if [ "$FRACTION" = "0" ]; then
  ZERO=(--zero-shot)
else
  echo; echo "== teachers on the fully labelled $FRACTION"
  $PL teacher-finetune --fraction "$FRACTION" --config "$CONFIG" --run-dir "$RUN"
fi

for weak in "${SETTINGS[@]}"; do
  echo; echo "== $weak: weak labels, pseudo-masks, student"
  $PL weaken --weak "$weak" --fraction "$FRACTION" --config "$CONFIG" \
    --out "$RUN/weak/$weak.json"
  $PL generate --weak "$weak" --config "$CONFIG" --run-dir "$RUN" ${ZERO[@]+"${ZERO[@]}"}
  $PL evaluate --pseudo "$RUN/pseudo/$weak.json" --config "$CONFIG" \
    --json "$RUN/eval/pseudo_$weak.json"
  $PL train-student --weak "$weak" --config "$CONFIG" --run-dir "$RUN"
done
echo; echo "students and metrics in $RUN/student"
