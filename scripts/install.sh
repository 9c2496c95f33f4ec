#!/usr/bin/env bash
# Creates .venv with the one torch/torchvision pair that works here, then g4seg itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test]"
# FastGeodis (SAMRefiner's distance transform) ships only as source that imports
# pkg_resources and torch while building: build it against this torch, once.
if ! python -c "import FastGeodis" 2>/dev/null; then
  python -m pip install -q "setuptools<80"
  python -m pip install -q --no-build-isolation "FastGeodis==1.0.5"
fi
