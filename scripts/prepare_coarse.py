"""Segmenters' released outputs into the harness's coarse files; see
`datamodules/coarse_convert.py` (`python scripts/prepare_coarse.py --help`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.coarse_convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
