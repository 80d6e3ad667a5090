#!/usr/bin/env bash
# The main job: set up (first run ~10 minutes), then train on a folder of images.
# Usage: bash scripts/train.sh [FOLDER] [--arch NAME] [--sz N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${FASTAI_VENV:-.venv}/bin/python" examples/train.py "$@"
