"""Paper experiment configs: the real ones parse and fail clearly without weights; their tiny
twins are in sync and run end to end (CascadePSP alone and chained after G4Seg included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, cli, read_metrics

PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def test_tiny_configs_are_in_sync():
    proc = subprocess.run([sys.executable, "scripts/make_tiny_configs.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_real_config_parses_and_names_missing_weights(config: Path):
    code, out, err = cli("predict", "--config", str(config), "--print_config")
    assert code == 0 and "strategies:" in out, err[-2000:]
    code, out, err = cli("predict", "--config", str(config))
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("g4seg")][0].startswith(
        "g4seg: error: ") and "files or folders this config names do not exist (nothing was run)" in lines[0]
    missing = [line.split("  (")[0].strip() for line in lines if line.startswith("  /")]
    assert any(path.startswith("/models/") for path in missing) and any(path.startswith("/data/") for path in missing)
    assert err.count("get it: ") == len(missing) == len(set(missing))


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_tiny_config_runs(config: Path, tmp_path):
    tiny = ROOT / "configs" / "paper" / "tiny" / config.name
    code, out, err = cli("predict", "--config", str(tiny), "--data.init_args.limit", "2", "--output_dir", str(tmp_path))
    assert code == 0, err[-3000:]
    metrics = read_metrics(tmp_path)
    assert metrics["num_samples"] == 2
    import yaml

    names = [s["name"] for s in yaml.safe_load(tiny.read_text())["model"]["strategies"]]
    assert list(metrics["strategies"]) == names
    for m in metrics["strategies"].values():
        assert m["miou_refined"] == m["miou_refined"]  # not NaN
