#!/usr/bin/env bash
# Fine-tune the embedded prior on one GPU for a fixed wall-clock budget, then leave its EMA
# weights in parts of at most 15.5 MiB (scripts/safetensors_parts.py), its log and its sample grids
# in OUT. Written for a lent GPU machine with minutes to spare: a probe of 40 steps times a step
# (and runs every code path once: validation, a sample grid, a checkpoint), then the run gets as
# many steps as the budget holds, so its cosine schedule ends when the time does.
#
#   scripts/train_prior_gpu.sh LATENTS OUT [SECONDS] [--set key=value ...]
#
# Trailing --set overrides apply to both runs (a dry run on the CPU: --set train.device=cpu
# --set train.batch_size=2).
#
# Batch 256 (16x the CPU campaign's), peak lr 1e-3; dropout 0.1 and weight decay 0.05 because
# hundreds of epochs over 1700 emoji would otherwise be memorised (the CPU run's train/val gap
# was already ~0.09 nats at 41 epochs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LATENTS=$1 OUT=$2 BUDGET=${3:-420}
shift $(( $# < 3 ? $# : 3 ))
PY=${PYTHON:-python3}
began=$(date +%s)
RUNS=${SUNDAE_GPU_RUNS:-/tmp/sundae_gpu}
mkdir -p "$OUT" "$RUNS"
COMMON=(--config configs/prior_emoji.yaml --no-progress --set data.path="$LATENTS" --set train.device=cuda
        --set train.init=sundae_core/default_models/prior.safetensors --set train.compile=false
        --set train.batch_size=256 --set train.lr=0.001 --set train.weight_decay=0.05 --set model.dropout=0.1
        --set train.ema_decay=0.999 "$@")

"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# 1. probe: 40 steps at the run's batch, logging every 5th step's time
"$PY" -m trainers.training.train_prior "${COMMON[@]}" --run-dir "$RUNS/probe" --set train.steps=40 \
    --set train.warmup=10 --set train.log_every=5 --set train.val_every=1000 --set train.ckpt_every=1000 \
    --set train.sample_every=1000
step_s=$("$PY" -c "
import json, statistics, sys
rows = [json.loads(l) for l in open('$RUNS/probe/log.jsonl')]
times = [r['step_seconds'] for r in rows if 'step_seconds' in r and r['step'] > 10]
print(statistics.median(times))")
left=$(( BUDGET - ($(date +%s) - began) ))
# 10 % of the time for validation, sample grids, checkpoints and the start
steps=$("$PY" -c "print(max(100, int(0.9 * $left / $step_s)))")
echo "probe: $step_s s/step; $left s left -> $steps steps"

# 2. the run; killed at the budget if the estimate was off (its last checkpoint is kept)
timeout $(( left + 30 )) "$PY" -m trainers.training.train_prior "${COMMON[@]}" --run-dir "$RUNS/run" \
    --set train.steps="$steps" --set train.warmup=200 --set train.log_every=50 --set train.val_every=250 \
    --set train.ckpt_every=500 --set train.sample_every=$(( steps / 2 )) || echo "run stopped early ($?)"

# 3. what comes back
if [ ! -f "$RUNS/run/model.safetensors" ]; then
    echo "no checkpoint in $RUNS/run: the run stopped before its first (train.ckpt_every=500); give more seconds" >&2
    exit 1
fi
"$PY" scripts/safetensors_parts.py split "$RUNS/run/model.safetensors" "$OUT" --max-mb 15.5
cp "$RUNS/run/log.jsonl" "$OUT/log.jsonl"
cp "$RUNS/run/config.yaml" "$OUT/config.yaml"
last=$(ls "$RUNS/run/samples"/*.png 2>/dev/null | tail -1 || true)
[ -n "$last" ] && cp "$last" "$OUT/samples_last.png"
echo "done in $(( $(date +%s) - began )) s"
