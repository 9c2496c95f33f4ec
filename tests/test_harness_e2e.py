"""The harness as a user runs it: CLI, DDP on CPU (gloo), kill and resume, report rebuild."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, cli, finished_run, read_metrics, run_cli

DEMO_ARGS = ["predict", "--config", "configs/densecrf.yaml"]
SEVEN = [*DEMO_ARGS, "--data.init_args.limit", "7", "--data.init_args.batch_size", "1"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("one"), *SEVEN)


def test_cli_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli(*DEMO_ARGS, "--output_dir", str(out))
    assert "Which strategy wins where: mIoU gain" in proc.stdout and "densecrf" in proc.stdout, proc.stdout
    # the progress bar counts images (8, in batches of 2) and has ended before the summary
    bar = proc.stdout.split("Which strategy")[0]
    assert "Predicting" in bar and " 8/8 " in bar and "Predicting" not in proc.stdout.split("Which strategy")[1]
    view = proc.stdout.split("Which strategy")[1].split("95% CI: paired bootstrap")[0]
    assert view.count("\n") >= 6 and all(len(line) <= 100 for line in view.splitlines())
    metrics = read_metrics(out)
    assert metrics["num_samples"] == 8 and metrics["num_unscored"] == 0
    assert set(metrics["strategies"]) == {"identity", "densecrf"}
    for name, m in metrics["strategies"].items():
        assert {"miou_baseline", "miou_refined", "strata"} <= set(m)
        assert [(s["low"], s["high"]) for s in m["strata"]] == [(0, 40), (40, 80), (80, 100)]
        for s in m["strata"]:
            assert {"low", "high", "count", "miou_baseline", "miou_refined"} <= set(s)
    ident = metrics["strategies"]["identity"]
    assert ident["miou_refined"] == ident["miou_baseline"]
    assert metrics["strategies"]["densecrf"]["miou_refined"] != ident["miou_baseline"]
    for f in ("metrics.csv", "summary.md", "strata.png", "timings.json", "run.json"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "strata.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for source in ("baseline", "identity", "densecrf"):
        assert len(list((out / "masks" / source).glob("*.png"))) == 8
    assert len(list((out / "records").glob("*.json"))) == 8

    # `g4seg report` rebuilds the same numbers from the records alone
    (out / "metrics.json").unlink()
    assert cli("report", str(out), "--in-place")[0] == 0
    assert read_metrics(out) == metrics
    # ... and other strata edges on demand, in a new folder
    assert cli("report", str(out), "--edges", "0", "50", "100")[0] == 0
    assert len(read_metrics(out / "reports" / "1")["strategies"]["densecrf"]["strata"]) == 2
    assert read_metrics(out) == metrics


def test_ddp_two_processes_equals_one(tmp_path, one_process_run):
    out = tmp_path / "ddp"
    run_cli(*SEVEN, "--output_dir", str(out), "--trainer.devices", "2", "--trainer.strategy", "ddp")
    ids = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert len(ids) == 7 == len(set(ids))
    assert read_metrics(out) == read_metrics(one_process_run)
    assert read_metrics(out)["num_samples"] == 7


def test_kill_and_resume(tmp_path, one_process_run):
    out = tmp_path / "resume"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "g4seg.cli", *SEVEN, "--output_dir", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 300
    records = out / "records"
    while time.time() < deadline and proc.poll() is None:
        if records.is_dir() and len(list(records.glob("*.json"))) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    done = len(list(records.glob("*.json")))
    assert 2 <= done < 7, f"the run was not interrupted mid-way ({done} records)"
    assert not (out / "metrics.json").exists()
    for record in records.glob("*.json"):  # atomic writes: whatever exists is whole
        json.loads(record.read_text())

    code, stdout, stderr = cli(*SEVEN, "--output_dir", str(out))
    assert code == 0 and f"{done} samples already done" in stdout + stderr
    assert len(list(records.glob("*.json"))) == 7
    assert read_metrics(out) == read_metrics(one_process_run)


def test_resume_refuses_other_strategies(tmp_path, one_process_run):
    code, _, stderr = cli(
        *SEVEN, "--output_dir", str(one_process_run), "--model.strategies",
        json.dumps([{"name": "other", "refiners": [{"class_path": "strategies.refiners.Identity"}]}]),
    )  # fmt: skip
    assert code == 2
    assert "holds a run with another configuration (differs in: " in stderr
    assert "Traceback" not in stderr
