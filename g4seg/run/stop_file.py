"""The file a signalled process leaves in the run folder so that every other process of the
run, on any node, stops too (`stopping.py`); read without Lightning by `failures.py`."""

from __future__ import annotations

import signal
from pathlib import Path

STOP = ".stop"


def signal_in(stop_file: Path) -> int | None:
    """The signal a process of the run got, from the stop file it left; None without one."""
    try:
        text = Path(stop_file).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else int(signal.SIGTERM)
