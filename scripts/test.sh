#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (cargo test), the check of the extension's
# type stub (mypy.stubtest) and the Python suite (pytest).
# Sets the machine up first (scripts/setup.sh), so it works on a fresh clone.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k transforms`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FASTAI_VENV:-.venv}
source "$VENV/bin/activate"
export LIBTORCH_USE_PYTORCH=1
TORCH_LIB=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"

echo "== cargo test"
# The unit tests and the integration tests of tests/*.rs (loader, cache, fit). Debug profile on
# purpose: they are small, and building libtorch's C++ bindings at -O0 takes about half the CPU
# time of a release build (measured 317 s of CPU).
cargo test --lib --tests

echo "== stubtest"
# The hand-written stub python/fastai/_native.pyi against the built module: every class,
# function and constant, their parameters (names, order, keyword-only, defaults) and kinds.
# MYPYPATH makes mypy read this checkout's stub (the package is installed from it, editable).
MYPYPATH=python python -m mypy.stubtest fastai._native

echo "== pytest"
set +e
python -m pytest -q "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
if [ "$rc" -eq 5 ]; then echo "pytest ran no test" >&2; exit 1; fi
exit "$rc"
