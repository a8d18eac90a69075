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
# once and shared by several fractions; FULL_RUN=none skips it (another process trains it:
# `make -j synthetic-table2` runs it beside the columns). TEACHER_ARGS adds flags to
# teacher-finetune (e.g. --steps for a smoke run). NPROC (default: the number of visible
# GPUs, 1 without one) runs the model stages under torchrun --nproc_per_node NPROC;
# STUDENT (mask2former, the default, or condinst) picks the student, SEED (default 0) its
# seed (students of another seed train into their own folders beside the first; teachers and
# pseudo-masks are shared) and STUDENT_ARGS adds flags to every train-student (not --seed).
# Every stage resumes, so re-running the same command after an interruption continues.
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
STUDENT=${STUDENT:-mask2former}
SEED=${SEED:-0}
STUDENT_ARGS="--student $STUDENT --seed $SEED ${STUDENT_ARGS:-}"
SEEDED=""  # train-student's folder suffix for the seed
if [ "$SEED" != 0 ]; then SEEDED="-seed$SEED"; fi
if [ -z "${NPROC:-}" ]; then
  NPROC=$(.venv/bin/python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
if [ "$NPROC" -gt 1 ]; then
  RUNNER=".venv/bin/torchrun --nproc_per_node $NPROC -m pseudolabel"
else
  RUNNER="$PL"
fi

echo "== check: every file $CONFIG names"
$PL check-config --config "$CONFIG"

if [ "$FULL_RUN" != "none" ]; then
  echo; echo "== fully supervised student (the 100% row)"
  $RUNNER train-student --full --config "$CONFIG" --run-dir "$FULL_RUN" $STUDENT_ARGS
  if [ "$FULL_RUN" != "$RUN" ]; then
    mkdir -p "$RUN/student/full-$STUDENT$SEEDED"
    cp "$FULL_RUN/student/full-$STUDENT$SEEDED/metrics.json" "$RUN/student/full-$STUDENT$SEEDED/"
  fi
fi

ZERO=()
if [ "$FRACTION" = "0" ]; then
  ZERO=(--zero-shot)
else
  echo; echo "== teachers on the fully labelled $FRACTION"
  $RUNNER teacher-finetune --fraction "$FRACTION" --config "$CONFIG" --run-dir "$RUN" \
    ${TEACHER_ARGS:-}
fi

echo; echo "== weak labels of every setting"
for weak in "${SETTINGS[@]}"; do
  $PL weaken --weak "$weak" --fraction "$FRACTION" --config "$CONFIG" \
    --out "$RUN/weak/$weak.json"
done

echo; echo "== pseudo-masks of every setting in one pass (each image encoded once)"
WEAK_LIST=$(IFS=,; echo "${SETTINGS[*]}")
$RUNNER generate --weak "$WEAK_LIST" --config "$CONFIG" --run-dir "$RUN" ${ZERO[@]+"${ZERO[@]}"}

for weak in "${SETTINGS[@]}"; do
  echo; echo "== $weak: pseudo-mask quality, student"
  $PL evaluate --pseudo "$RUN/pseudo/$weak.json" --config "$CONFIG" \
    --json "$RUN/eval/pseudo_$weak.json"
  $RUNNER train-student --weak "$weak" --config "$CONFIG" --run-dir "$RUN" $STUDENT_ARGS
done
echo; echo "students and metrics in $RUN/student"
