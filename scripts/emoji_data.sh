#!/usr/bin/env bash
# The default model's data, built from nothing but the npm registry: the curated emoji folders and
# the latent datasets the prior campaign trains on. Every step is skipped when its output is there,
# so a session whose $SUNDAE_DATA was lost (a new machine) runs this once and resumes the campaign.
# On the 2-core Intel machine: 2 s for the assets, 2 s for the folders, 8.5 min for emoji_latents_v2
# and 6.6 min for emoji_latents_v2t (two encoder processes, one thread each).
#   bash scripts/emoji_data.sh            # all of it (what scripts/train_prior_gpu.sh and 3c-3i use)
#   bash scripts/emoji_data.sh images     # the image folders only (sundae-eval-default, the VQ-GAN)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh
DATA=${SUNDAE_DATA:-$HOME/sundae/data}
VQGAN=sundae_core/default_models/vqgan.safetensors
ENCODE=(torchrun --nproc-per-node 2 -m trainers.data.build_latents --vqgan "$VQGAN" --resolution 1024
        --labels-from-folders)

# Fluent Emoji 3D (MIT, 3391 images of 256 x 256 px) and emoji-datasource 16.0.0 (MIT, the Unicode
# group of every emoji); curated into 1869 emoji (skin tones collapsed) in 9 group folders, 10 % held
# out by trainers/data/image_data.is_validation.
mkdir -p "$DATA/assets"
[ -d "$DATA/assets/node_modules/@lobehub/fluent-emoji-3d" ] ||
    (cd "$DATA/assets" && npm install --silent @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource@16.0.0)
[ -d "$DATA/emoji_groups" ] ||
    python -m trainers.data.prepare_emoji --assets "$DATA/assets/node_modules" --out "$DATA/emoji_groups"
# the skin-tone variants of the training emoji (none of a held-out emoji's variants)
[ -d "$DATA/emoji_tones" ] ||
    python -m trainers.data.prepare_emoji --assets "$DATA/assets/node_modules" --out "$DATA/emoji_tones" --variants
[ "${1:-all}" = images ] && exit 0

# every image and its mirror image at 1024 px through the shipped encoder, labelled by group folder;
# the manifest records the token version, so a prior cannot train on another encoder's tokens
[ -f "$DATA/emoji_latents_v2/manifest.json" ] ||
    "${ENCODE[@]}" --images "$DATA/emoji_groups" --out "$DATA/emoji_latents_v2"
[ -f "$DATA/emoji_latents_v2t/manifest.json" ] ||
    "${ENCODE[@]}" --images "$DATA/emoji_tones" --extend "$DATA/emoji_latents_v2" --out "$DATA/emoji_latents_v2t"
echo "emoji data ready in $DATA: emoji_groups, emoji_tones, emoji_latents_v2, emoji_latents_v2t"
