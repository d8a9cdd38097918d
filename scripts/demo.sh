#!/usr/bin/env bash
# The main job on the embedded default model: a sample grid, inpainting and outpainting results and the
# denoising chain, written to output/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh
python -m trainers.sampling.demo --output-dir output/demo "$@"
