"""A full disk ends a run, or a report, in one line naming the file, the space it needed and
the space left; what was written is whole, and once space is freed the same command resumes
to the numbers of a run that never ran out. Uses a real small tmpfs (needs root; skipped
with the reason otherwise)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from helpers import cli, error_line, finished_run, read_metrics

RUN = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "4", "--data.init_args.batch_size", "1",
       "--scoring.bootstrap", "200"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("reference"), *RUN)


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk, leave: int):
    """A file that takes all but `leave` bytes of the disk."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def test_the_disk_fills_during_the_run_and_the_rerun_resumes(small_disk, reference):
    out = small_disk / "run"
    filler = fill(small_disk, 24 * 1024)  # run.json and a few samples' masks and records fit
    line = error_line(*cli(*RUN, "--output_dir", str(out))[::2])
    assert line.startswith(f"g4seg: error: {out}/") and "no space left on the device of" in line, line
    assert re.search(r"\(\d+\.\d (kB|MB) free, \d+\.\d (kB|MB) needed for this file\); free some space, then rerun the "
                     "same command: what was written is whole and is kept$", line), line
    done = sorted((out / "records").glob("*.json")) if (out / "records").exists() else []
    assert len(done) < 4 and not (out / "metrics.json").exists()
    assert not [p for p in out.rglob(".*.tmp")], "a temp file was left behind"

    filler.unlink()
    code, stdout, err = cli(*RUN, "--output_dir", str(out))
    assert code == 0, err[-3000:]
    assert read_metrics(out) == read_metrics(reference)


def test_a_disk_already_full_is_named_before_any_work(small_disk):
    out = small_disk / "run"
    out.mkdir()
    fill(small_disk, 0)
    line = error_line(*cli(*RUN, "--output_dir", str(out))[::2])
    assert line.startswith(f"g4seg: error: {out}/") and "no space left on the device of" in line, line


def test_the_disk_fills_while_the_report_is_written(small_disk, reference):
    out = small_disk / "run"
    shutil.copytree(reference, out)
    for name in ("metrics.json", "summary.md", "metrics.csv", "report.html", "strata.png"):
        (out / name).unlink(missing_ok=True)
    fill(small_disk, 0)
    line = error_line(*cli("report", str(out))[::2])
    assert line.startswith(f"g4seg: error: {out}/") and "no space left on the device of" in line, line
    os.unlink(small_disk / "filler")
    code, _, err = cli("report", str(out))
    assert code == 0, err[-3000:]
    assert read_metrics(out) == read_metrics(reference)
