#!/usr/bin/env bash
# Fine-tune the embedded prior on one GPU for a fixed wall-clock budget, then leave each run's EMA
# weights in bf16 as parts of at most 15.5 MiB in OUT/<run name>/ (scripts/safetensors_parts.py;
# with several runs, the held-out loss's pick named in the output), its weights halfway through in
# OUT/<run name>-<step>/ where there is room, and every run's log, config and last sample grid in
# OUT/runs.tar. Written for a lent GPU machine with minutes to spare: a probe of 30 steps times a
# step (and runs every code path once: validation, a sample grid, a checkpoint), then each run gets
# as many steps as the budget holds, so its cosine schedule ends when the time does.
#
#   scripts/train_prior_gpu.sh LATENTS[,LATENTS...] OUT [SECONDS] [--set key=value ...]
#
# Several runs, comma-separated, train side by side on the one GPU (an A/B at equal steps: a
# batch-256 step of this small prior leaves most of an H200 idle, so two runs cost far less than
# twice one). A run is a latent folder, optionally followed by its own overrides after "@":
#   .device_data/latents,.device_data/latents@train.block_corruption=0.5@model.dropout=0.2
# A grown prior against the shipped one (sundae-grow-prior; commas inside brackets stay in the value):
#   .device_data/latents,.device_data/latents@train.init=GROWN@model.depth=[1,[2,10,2],1]@train.grown_lr_scale=3
# Each run is named after its folder and overrides; the one with the lowest final held-out loss is
# printed as "best", and every run's weights come back to be judged on sundae-eval-default, with
# its halfway step where what a call returns has room (the loss does not pick a generator's step
# either; one run: always). At most two runs: their models and the logs fill most of the 8 files
# and 64 MiB a call returns. Every folder needs the same val split for the losses to compare.
# Trailing --set overrides apply to every run (a dry run on the CPU: --set train.device=cpu
# --set train.compile=false --set train.batch_size=2; session 31's also --set model.dropout=0).
#
# STEP_S=0.13 FIRST_S=70 (wall seconds per step with these runs at once, and to the first step)
# skip the probe: for a short call on a machine whose step time is known, where the probe's
# compile would take half the budget. The first real checkpoint then is the first test of the paths.
#
# Compiled: on an H200 (sundae-bench-train --device cuda, session 8) a step took 0.128 s against
# 0.204 s eager, after a first step of 50 s (cold) or ~15 s (warm cache).
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
. scripts/gpu_runs.sh  # run_specs, name, folder, own_sets: what a run spec "folder@k=v@..." means
mapfile -t ARMS < <(run_specs "$LATENTS")
if (( ${#ARMS[@]} > 2 )); then
    echo "${#ARMS[@]} runs given: at most two, whose weights both fit what a GPU call returns" >&2
    exit 1
fi
mkdir -p "$OUT" "$RUNS"
COMMON=(--config configs/prior_emoji.yaml --no-progress --set train.device=cuda
        --set train.init=sundae_core/default_models/prior.safetensors --set train.compile=true
        --set train.batch_size=256 --set train.lr=0.001 --set train.weight_decay=0.05 --set model.dropout=0.1
        --set train.ema_decay=0.999 "$@")
train_cmd() {  # train_cmd ARM RUN_DIR: CMD = the trainer with the common settings, then the run's own
    local own
    mapfile -t own < <(own_sets "$1")
    CMD=("$PY" -m trainers.training.train_prior "${COMMON[@]}" --set data.path="$(folder "$1")" "${own[@]}" --run-dir "$2")
}

"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# 1. probe: 30 steps of every run at once at the run's batch, logging every 5th step's time
if [ -n "${STEP_S:-}" ]; then
    step_s=$STEP_S first_s=${FIRST_S:-70}
else
probe_began=$(date +%s)
for arm in "${ARMS[@]}"; do
    train_cmd "$arm" "$RUNS/probe-$(name "$arm")"
    "${CMD[@]}" --set train.steps=30 --set train.warmup=10 --set train.log_every=5 --set train.val_every=1000 \
        --set train.ckpt_every=1000 --set train.sample_every=1000 &
done
wait
# Wall seconds per step between the probe's 10th and last step (data loading and logging
# included, not only the step_seconds the trainer logs), and seconds besides the steady steps
# (start-up, loading, compiling: ~15 s from a warm cache, ~50 s cold on an H200; the closing
# validation, grid and checkpoint), from the probes' wall time since their launch
rate=$("$PY" -m trainers.training.time_budget rate --since "$probe_began" \
    $(for arm in "${ARMS[@]}"; do echo "$RUNS/probe-$(name "$arm")"; done))
read -r step_s first_s <<< "$rate"
fi
left=$(( BUDGET - ($(date +%s) - began) ))
if (( left < 60 )); then
    echo "the probe left $left s of the $BUDGET s budget: give more seconds" >&2
    exit 1
fi
# 20 s for validation, the sample grids and checkpoints, and 5 % to spare (time_budget.py)
steps=$("$PY" -m trainers.training.time_budget steps "$left" "$step_s" "$first_s")
echo "probe: $step_s s/step with ${#ARMS[@]} run(s) at once, $first_s s to the first step; $left s left -> $steps steps each"

# 2. the runs; each is killed at the budget if the estimate was off (its last checkpoint is kept).
# Each also keeps its model halfway (train.keep_every), brought back beside its final one where
# there is room: the best step of a fixed budget need not be its last
EARLIER=1
run_arm() {
    train_cmd "$1" "$RUNS/$(name "$1")"
    timeout $(( left + 30 )) "${CMD[@]}" --set train.steps="$steps" --set train.warmup=200 \
        --set train.log_every=50 --set train.val_every=250 --set train.ckpt_every=250 \
        --set train.keep_every=$(( (steps + EARLIER) / (EARLIER + 1) )) \
        --set train.sample_every=$(( steps / 2 )) || { code=$?; echo "run $(name "$1") stopped early ($code)"; }
}
for arm in "${ARMS[@]}"; do run_arm "$arm" & done
wait

# 3. what comes back: the best run's weights, every run's log, config and last sample grid
best=$("$PY" -m trainers.training.time_budget best \
    $(for arm in "${ARMS[@]}"; do echo "$RUNS/$(name "$arm")"; done))
if [ -z "$best" ]; then
    echo "no run left a checkpoint and a held-out loss in $RUNS (train.ckpt_every=250): give more seconds" >&2
    exit 1
fi
echo "best: $(name "$best")"
# every arm comes back as a bf16 EMA in OUT/<run name>/ (fp32 weights of two arms would pass the
# 64 MiB a call returns): the held-out loss picks "best" but does not judge a generator (session
# 11), so sundae-eval-default on the CPU chooses between them
for arm in "${ARMS[@]}"; do
    run=$RUNS/$(name "$arm")
    [ -f "$run/model.safetensors" ] || continue
    "$PY" -m trainers.checkpoints.export_model "$run/model.safetensors" "$run/model.bf16.safetensors" --bf16
    "$PY" scripts/safetensors_parts.py split "$run/model.bf16.safetensors" "$OUT/$(name "$arm")" --max-mb 15.5
done
# every run's log, config and last sample grid, the grid at a quarter of its size (nine 1024 px
# samples make an 8 MB PNG that would crowd out weights)
for arm in "${ARMS[@]}"; do
    run=$RUNS/$(name "$arm")
    last=$(ls "$run/samples"/*.png 2>/dev/null | tail -1 || true)
    [ -n "$last" ] && "$PY" -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).reduce(4).save(sys.argv[2])' \
        "$last" "$run/samples_last.png"
done
(cd "$RUNS" && tar -cf "$OUT/runs.tar" --ignore-failed-read \
    $(for arm in "${ARMS[@]}"; do n=$(name "$arm"); echo "$n/log.jsonl $n/config.yaml $n/samples_last.png"; done) \
    2>/dev/null || true)
# an earlier step of each arm, bf16, in OUT/<run name>-<step>/, where what a call returns has room
# for it (one arm: yes; two: only if the models are small)
for arm in "${ARMS[@]}"; do
    run=$RUNS/$(name "$arm")
    "$PY" -m trainers.training.time_budget kept "$run" "$EARLIER" | while read -r kept; do
        step=$(basename "$kept" .safetensors); step=$(( 10#${step#model_} ))
        staged=$run/earlier-$step
        rm -rf "$staged"
        "$PY" -m trainers.checkpoints.export_model "$kept" "$run/earlier.bf16.safetensors" --bf16
        "$PY" scripts/safetensors_parts.py split "$run/earlier.bf16.safetensors" "$staged" --max-mb 15.5 > /dev/null
        if room_for "$OUT" "$staged"; then
            mv "$staged" "$OUT/$(name "$arm")-$step"
        else
            echo "step $step of $(name "$arm") left out: no room in what a call returns"
        fi
    done
done
echo "done in $(( $(date +%s) - began )) s"
