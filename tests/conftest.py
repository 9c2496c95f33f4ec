"""Shared test setup. Nothing here may touch the network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest  # noqa: E402

from helpers import DEMO, REAL, ROOT  # noqa: E402


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def real_voc() -> Path:
    """The 16 bundled real VOC pairs (the suite reads nothing outside the repository)."""
    return REAL


SLOW_TESTS = {line.strip() for line in (ROOT / "tests" / "slow_tests.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Marks `slow` what tests/slow_tests.txt lists (measured), for the fast loop's -m "not slow"."""
    import pytest

    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
