#!/usr/bin/env bash
# Install sarcoscope with everything its tests need into the active Python environment and run the tests.
# torch is installed first, pinned, so that pip takes the CPU build instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[train,cluster,postgres,dev]"
ruff check src tests scripts
ruff format --check src tests scripts
python -m pytest -q "$@"
