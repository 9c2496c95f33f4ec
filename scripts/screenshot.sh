#!/usr/bin/env bash
# docs/report.png, the README's picture of the report page: the demo run's report.html in
# headless Chromium at 1,400 px wide (runs the demo first if its folder has no page).
#   bash scripts/screenshot.sh [OUTDIR]          # default outputs/demo
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1
out=${1:-outputs/demo}
[ -f "$out/report.html" ] || g4seg predict --config configs/demo.yaml --output_dir "$out"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot.sh: no Chromium; install it (Debian: apt-get install chromium)" >&2
  exit 1
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,2400 \
  --virtual-time-budget=5000 --screenshot="$PWD/docs/report.png" "file://$(realpath "$out/report.html")" 2>/dev/null
python - <<'PY'
from PIL import Image
image = Image.open("docs/report.png")
image.convert("RGB").quantize(128).save("docs/report.png", optimize=True)  # a readable picture, not megabytes
print("docs/report.png", image.size)
PY
