#!/usr/bin/env bash
# Installs (idempotent) and runs the offline demo on the bundled real VOC images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
g4seg predict --config "${1:-configs/demo.yaml}" "${@:2}"
