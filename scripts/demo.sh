#!/usr/bin/env bash
# Installs (idempotent) and runs the offline demo on the bundled real VOC images: first the
# strategy comparison on synthetic coarse masks (configs/demo.yaml), then coarse masks from
# SCLIP computed in the harness, alone and refined (configs/paper/tiny/table1_tsss.yaml).
# Tiny random models throughout: the tables say which rows used random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
if [ $# -gt 0 ]; then
  exec g4seg predict --config "$1" "${@:2}"
fi

# A rerun resumes (nothing to redo); a folder left by an older demo (another configuration)
# is moved aside to OUTDIR.old-N and the demo starts again there.
predict() {
  local log
  log=$(mktemp)
  if g4seg predict "$@" 2> >(tee "$log" >&2); then
    rm -f "$log"
    return 0
  fi
  if grep -q "holds a run with another configuration" "$log"; then
    rm -f "$log"
    g4seg predict "$@" --fresh true
  else
    rm -f "$log"
    return 2
  fi
}
predict --config configs/demo.yaml
predict --config configs/paper/tiny/table1_tsss.yaml --output_dir outputs/demo_sclip
echo
echo "open in a browser: $(pwd)/outputs/demo/report.html   (strategy comparison)"
echo "                   $(pwd)/outputs/demo_sclip/report.html   (SCLIP coarse masks)"
