"""Official dataset distributions into the VOC layout the datamodule reads; see
`datamodules/prepare.py` (`python scripts/prepare_datasets.py --help`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
