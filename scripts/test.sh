#!/usr/bin/env bash
# Installs (idempotent) and runs the whole test suite offline. Exit 5 (no tests) is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ruff check . || { echo "ruff check found the problems above (pyproject.toml [tool.ruff])" >&2; exit 1; }
python -m pytest -q -rs --durations=10 "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
