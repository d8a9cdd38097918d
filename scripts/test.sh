#!/usr/bin/env bash
# The test command: installs everything into .venv, then runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup_env.sh
python -m pytest -q "$@"
