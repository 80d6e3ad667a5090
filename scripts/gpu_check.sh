#!/usr/bin/env bash
# The device check of issue 7. On the GPU machine: install the wheel built here (carried in
# dist/) without touching its torch, then run the check. `--cpu`: a small run here on CPU.
#   here:  LIBTORCH_USE_PYTORCH=1 maturin build --release -o dist   (abi3 wheel)
#   there: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--cpu" ]; then
  python3 -m pip install -q --no-deps --force-reinstall dist/fastai_rs-*.whl
  PY=python3
else
  PY=${FASTAI_VENV:-.venv}/bin/python
fi
exec "$PY" scripts/gpu_check.py "$@"
