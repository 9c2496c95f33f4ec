"""Paper experiment configs: the real ones parse and fail clearly without weights; their tiny
twins are in sync and run end to end (CascadePSP alone and chained after G4Seg included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, read_metrics, run_cli

PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def test_tiny_configs_are_in_sync():
    proc = subprocess.run([sys.executable, "scripts/make_tiny_configs.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_real_config_parses_and_names_missing_weights(config: Path):
    run_cli("predict", "--config", str(config), "--print_config")
    proc = run_cli("predict", "--config", str(config), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("g4seg: error: /models/") for line in error)
    assert "Download" in proc.stderr


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_tiny_config_runs(config: Path, tmp_path):
    tiny = ROOT / "configs" / "paper" / "tiny" / config.name
    run_cli("predict", "--config", str(tiny), "--data.init_args.limit", "2", "--output_dir", str(tmp_path))
    metrics = read_metrics(tmp_path)
    assert metrics["num_samples"] == 2
    import yaml

    names = [s["name"] for s in yaml.safe_load(tiny.read_text())["model"]["strategies"]]
    assert list(metrics["strategies"]) == names
    for m in metrics["strategies"].values():
        assert m["miou_refined"] == m["miou_refined"]  # not NaN
