#!/usr/bin/env bash
# The exact commands that trained the embedded default models (sundae_core/default_models/), as
# run on a 2-core CPU (see sundae_core/default_models/MODEL_CARD.md for times and metrics).
# Each training command resumes when re-run; each stage was stopped at the step named below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh

# Data: Fluent Emoji 3D (MIT), 3391 images of 256 x 256 px, from the npm registry
mkdir -p data/assets && (cd data/assets && npm install --silent @lobehub/fluent-emoji-3d@1.1.0)
ln -sfn "$PWD/data/assets/node_modules/@lobehub/fluent-emoji-3d/assets" data/emoji

# 1. f = 32 VQ-GAN on 128 px crops of the art scaled to 1024 px; stopped at step 1600
OMP_NUM_THREADS=1 python -m trainers.train_vqgan --config configs/vqgan_emoji_f32.yaml \
    --run-dir runs/vqgan_emoji --set train.steps=1600
mkdir -p runs/frozen && cp runs/vqgan_emoji/model.safetensors runs/frozen/vqgan_step1600.safetensors

# 2. latent dataset: a stable 30 % of the images, each with its mirror image, at 1024 px
OMP_NUM_THREADS=1 python -m trainers.build_latents --vqgan runs/frozen/vqgan_step1600.safetensors \
    --images data/emoji --resolution 1024 --out data/emoji_latents --subset 0.3

# 3. SUNDAE prior on the 32 x 32 tokens, in two sessions: a cosine schedule over 600 steps stopped
#    at step 400, then resumed with the schedule stretched to 1300 steps (the learning rate rose
#    from 3.3e-4 back to 7.1e-4 at the restart and decayed to 8e-5)
OMP_NUM_THREADS=1 python -m trainers.train_prior --config configs/prior_emoji.yaml --run-dir runs/prior_emoji \
    --set train.vqgan=runs/frozen/vqgan_step1600.safetensors --set train.steps=600 \
    --set train.sample_every=200 --set train.val_every=200   # stopped at step 400
OMP_NUM_THREADS=1 python -m trainers.train_prior --config configs/prior_emoji.yaml --run-dir runs/prior_emoji \
    --set train.vqgan=runs/frozen/vqgan_step1600.safetensors --set train.steps=1300 \
    --set train.sample_every=425 --set train.val_every=425

# 4. ship both in bf16
python -m trainers.export_model runs/frozen/vqgan_step1600.safetensors sundae_core/default_models/vqgan.safetensors \
    --bf16 --note data="Fluent Emoji 3D 1.1.0 (MIT)"
python -m trainers.export_model runs/prior_emoji/model.safetensors sundae_core/default_models/prior.safetensors \
    --bf16 --note data="Fluent Emoji 3D 1.1.0 (MIT), 30 % subset, flipped copies"
