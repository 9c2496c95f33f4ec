"""Writes tests/slow_tests.txt from a pytest run's `--durations=0` report: every test whose
setup, call and teardown took THRESHOLD seconds or more is marked `slow` (tests/conftest.py
reads the file), so the fast loop `bash scripts/test.sh -m "not slow"` stays short.

    bash scripts/test.sh --durations=0 | python scripts/slow_tests.py [THRESHOLD] > tests/slow_tests.txt   (then keep the by-hand lines)
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

threshold = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
seconds: dict[str, float] = defaultdict(float)
for line in sys.stdin:
    m = re.match(r"^([0-9.]+)s (?:call|setup|teardown)\s+(\S+)", line)
    if m:
        seconds[m.group(2)] += float(m.group(1))
print(f"# Tests marked slow (left out of the fast loop, bash scripts/test.sh -m \"not slow\"): those that took >= {threshold:g} s")
print("# in a full run (pytest --durations=0). Regenerate: see scripts/slow_tests.py.")
for name in sorted(n for n, s in seconds.items() if s >= threshold):
    print(name)
