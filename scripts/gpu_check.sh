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
"$PY" scripts/gpu_check.py "$@"
# Data-parallel scaling (learn.distrib_ctx, NCCL): 1, 2, 4, ... ranks up to the GPUs present.
if [ "${1:-}" != "--cpu" ]; then
  WORLDS=$("$PY" -c 'import torch; n = torch.cuda.device_count(); print(",".join(str(w) for w in (1, 2, 4, 8) if w <= n))')
  PYTHONPATH=$PWD/python "$PY" benches/bench_distributed.py --worlds "$WORLDS" --sz 224 --bs 64 \
    --steps 30 --threads 4 --unfreeze
fi
