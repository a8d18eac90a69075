#!/usr/bin/env bash
# The CUDA side of pseudolabel, checked on a machine with NVIDIA GPUs (none is attached where
# it is developed; there the same code paths run on the CPU, with bf16 autocast and gloo).
#
#   make install && bash scripts/gpu_check.sh
#
# On the synthetic default at 10% masks (the demo's size), with --device cuda: teachers,
# generate --weak all and short students in bf16 (and one fp16 student, the gradient-scaler
# path); the same pseudo-masks in fp32 and their agreement with bf16's (>= 95% of masks at
# IoU >= 0.9); the same pipeline under torchrun --nproc_per_node 2 when two GPUs are visible;
# and generate images/s with SAM ViT-H (random weights, 1024 px) in fp32 and bf16, printed as
# "bf16/fp32 throughput ratio: X". Exits non-zero at the first failure. Aimed at <= 8 minutes
# on one H100. GPU_CHECK_DIR (default runs/gpu_check) holds everything it writes.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SAM=tiny runs the same steps on a CPU (slow; it checks the
# script itself where no GPU exists).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PL=.venv/bin/pseudolabel
W=${GPU_CHECK_DIR:-runs/gpu_check}
DEV=${GPU_CHECK_DEVICE:-cuda}
SAM=${GPU_CHECK_SAM:-vit_h}
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$DEV" != cpu ] && [ "$NGPU" -lt 1 ]; then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False)" >&2
  exit 1
fi
step() { echo; echo "== $* ($(date +%T))"; }
START=$(date +%s)
rm -rf "$W"
BF=$W/bf16
FP=$W/fp32

step "weak labels of the four settings at 10%"
for w in none class point+class box+class; do
  $PL weaken --weak "$w" --fraction 0.1 --out "$BF/weak/$w.json"
done

step "teacher-finetune, $DEV, bf16"
$PL teacher-finetune --fraction 0.1 --run-dir "$BF" --device $DEV --precision bf16

step "generate --weak all, $DEV, bf16"
$PL generate --weak all --run-dir "$BF" --device $DEV --precision bf16 --encode-batch 16

step "the same teachers in fp32 (box+class, point+class)"
mkdir -p "$FP"
cp -r "$BF/teacher" "$BF/split.json" "$BF/weak" "$FP/"
$PL generate --weak box+class,point+class --run-dir "$FP" --device $DEV --precision fp32

step "bf16 vs fp32 pseudo-masks"
for w in box+class point+class; do
  $PY scripts/compare_pseudo.py "$BF/pseudo/$w.json" "$FP/pseudo/$w.json" --min-share 0.95
  $PL evaluate --pseudo "$BF/pseudo/$w.json" | head -1
done

step "students: CondInst bf16, Mask2Former fp16 (gradient scaler)"
$PL train-student --weak point+class --student condinst --steps 100 --run-dir "$BF" \
  --device $DEV --precision bf16
$PL train-student --weak box+class --student mask2former --steps 50 --run-dir "$BF" \
  --device $DEV --precision fp16

if [ "$DEV" != cpu ] && [ "$NGPU" -ge 2 ]; then
  step "two GPUs under torchrun (NCCL)"
  D=$W/ddp
  mkdir -p "$D"
  cp -r "$BF/weak" "$D/"
  TR=".venv/bin/torchrun --nproc_per_node 2 -m pseudolabel"
  $TR teacher-finetune --fraction 0.1 --run-dir "$D" --precision bf16
  $TR generate --weak all --run-dir "$D" --precision bf16
  $TR train-student --weak point+class --student condinst --steps 100 --run-dir "$D" \
    --precision bf16
  for w in none class point+class box+class; do
    test -s "$D/pseudo/$w.json"
  done
else
  step "fewer than two GPUs: the torchrun check is skipped"
fi

step "generate throughput, SAM $SAM (random weights), fp32 vs bf16"
$PY benchmarks/gpu_throughput.py --sam "$SAM" --device $DEV --images 64 --encode-batch 16

echo
echo "gpu_check: all passed in $(( $(date +%s) - START )) s"
