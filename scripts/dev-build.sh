#!/usr/bin/env bash
# Developer loop: rebuild the extension in place (release, ~20 s incremental) so that
# `PYTHONPATH=python pytest` uses it, without reinstalling anything.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
cargo build --release --features python
cp target/release/libfastai_native.so python/fastai/_native.abi3.so
