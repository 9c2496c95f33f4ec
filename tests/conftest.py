"""Shared test setup. Nothing here may touch the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "voc2012"
REAL = ROOT / "data" / "real" / "voc2012"  # all 16 real pairs, in the repository: no sibling folder needed


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def real_voc() -> Path:
    """The 16 bundled real VOC pairs (the suite reads nothing outside the repository)."""
    return REAL


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "g4seg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"g4seg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def cli(*args: str) -> tuple[int, str, str]:
    """`g4seg ARGS` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from g4seg.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def error_line(code: int, err: str) -> str:
    """The one `g4seg: error...` line of a failed CLI call, asserting exit code 2 and no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("g4seg")]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def demo_with(tmp_path: Path, *names: str) -> str:
    """configs/demo.yaml with only the named strategies (and their injectors), for tests about
    one behaviour that need not pay for every refiner of the demo."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["model"]["strategies"] = [s for s in config["model"]["strategies"] if s["name"] in names]
    used = {s.get("injector") for s in config["model"]["strategies"]}
    config["model"]["injectors"] = {k: v for k, v in config["model"]["injectors"].items() if k in used}
    path = tmp_path / "demo_subset.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def finished_run(out, *args: str):
    """`g4seg ARGS --output_dir OUT`, in-process, asserting success; returns OUT."""
    code, _, err = cli(*args, "--output_dir", str(out))
    assert code == 0, err[-3000:]
    return out


SLOW_TESTS = {line.strip() for line in (ROOT / "tests" / "slow_tests.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Marks `slow` what tests/slow_tests.txt lists (measured), for the fast loop's -m "not slow"."""
    import pytest

    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
