#!/usr/bin/env bash
# On a GPU machine: G4Seg at real size (SD 2.1-shaped, random weights: no download) and every
# refiner, and `g4seg predict` on 1 and on all GPUs; figures into OUT/gpu_check.json and
# OUT/gpu_check.log. Needs the package's dependencies (scripts/install.sh) and ~40 GB of GPU memory.
#   bash scripts/gpu_check.sh [OUT [gpu_check.py options, e.g. --only stages]]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_check.log" || true
python3 scripts/gpu_check.py --out "$OUT" "${@:2}" 2>&1 | tee -a "$OUT/gpu_check.log"
