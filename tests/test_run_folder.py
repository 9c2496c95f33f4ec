"""A run folder cannot lie: reruns resume only the same configuration, numbers count exactly
the current dataset's ids, one writer at a time, files as the umask says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, cli, demo_with, error_line, finished_run, read_metrics
from g4seg.run.folder import FolderLock

BASE = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "3"]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("run"), *BASE)


@pytest.mark.parametrize("change,key", [
    (["--data.init_args.limit", "2"], "data.init_args.limit"),
    (["--data.init_args.root", "data/real/voc2012"], "data.init_args.root"),
    (["--data.init_args.coarse.init_args.iou_range", "[20, 90]"], "data.init_args.coarse.init_args.iou_range"),
    (["--data.init_args.coarse.init_args.seed", "1"], "data.init_args.coarse.init_args.seed"),
    (["--model.strata_edges", "[0, 50, 100]"], "model.strata_edges"),
    (["--model.strategies", json.dumps([{"name": "identity", "refiners": [{"class_path": "strategies.refiners.Identity"}]},
                                        {"name": "densecrf", "refiners": [{"class_path": "strategies.refiners.DenseCRF",
                                                                           "init_args": {"iterations": 5}}]}])],
     "model.strategies[1].refiners[0].init_args.iterations"),
    (["--data.init_args.classes", "context"], "data.init_args.classes"),
])  # fmt: skip
def test_rerun_with_another_configuration_is_refused_naming_the_key(done_run, change, key):
    before = sorted(p.name for p in (done_run / "records").iterdir())
    line = error_line(*cli(*BASE, *change, "--output_dir", str(done_run))[::2])
    assert line.startswith(f"g4seg: error: {done_run} holds a run with another configuration (differs in: ")
    assert key in line and "--fresh true" in line
    assert sorted(p.name for p in (done_run / "records").iterdir()) == before


def test_same_configuration_resumes_and_other_settings_may_change(done_run):
    metrics = read_metrics(done_run)
    stamps = {p.name: p.stat().st_mtime_ns for p in (done_run / "records").iterdir()}
    code, out, err = cli(*BASE, "--output_dir", str(done_run), "--data.init_args.batch_size", "2")
    assert code == 0, err[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (done_run / "records").iterdir()} == stamps, "nothing recomputed"
    assert read_metrics(done_run) == metrics


def test_a_folder_of_an_older_g4seg_is_refused_for_resume_in_one_line(tmp_path, done_run):
    out = tmp_path / "run"
    shutil.copytree(done_run, out)
    manifest = json.loads((out / "run.json").read_text())
    manifest["fingerprint"]["version"] = 2
    (out / "run.json").write_text(json.dumps(manifest))
    line = error_line(*cli(*BASE, "--output_dir", str(out))[::2])
    assert line == (f"g4seg: error: {out} holds a run written by an older g4seg (run folder version 2, now 3); its "
                    "records cannot be resumed: use another --output_dir, or --fresh true to move it aside")


def test_fresh_moves_the_old_run_aside(tmp_path, done_run):
    out = tmp_path / "run"
    shutil.copytree(done_run, out)
    code, _, err = cli(*BASE[:-1], "2", "--output_dir", str(out), "--fresh", "true")
    assert code == 0, err[-2000:]
    assert read_metrics(out)["num_samples"] == 2
    assert read_metrics(tmp_path / "run.old-1")["num_samples"] == 3


def test_numbers_count_exactly_the_datasets_ids(tmp_path, done_run):
    out = tmp_path / "run"
    shutil.copytree(done_run, out)
    stray = json.loads(next((out / "records").glob("*.json")).read_text())
    stray["id"] = "not_in_this_dataset"
    (out / "records" / "not_in_this_dataset.json").write_text(json.dumps(stray))
    metrics = read_metrics(done_run)
    assert cli(*BASE, "--output_dir", str(out))[0] == 0
    assert read_metrics(out) == metrics
    assert cli("report", str(out))[0] == 0
    assert read_metrics(out / "reports" / "1") == metrics and metrics["num_samples"] == 3


def test_duplicate_ids_in_a_split_are_refused(tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("2007_000032\n2007_000129\n2007_000032\n")
    line = error_line(*cli(*BASE, "--data.init_args.split", str(split), "--output_dir", str(tmp_path / "o"))[::2])
    assert "listed more than once: ['2007_000032']" in line


def test_a_second_concurrent_run_is_refused(tmp_path):
    """Another process holds the folder (a real second process), as a running g4seg would."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.'); from g4seg.run.folder import FolderLock; "
        f"FolderLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "g4seg.cli", *BASE, "--output_dir", str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        line = error_line(proc.returncode, proc.stderr)
        assert f"another g4seg run (pid {holder.pid}) is writing to this folder" in line
        assert not (out / "records").exists()
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(out)  # the holder died: its lock went with it
    lock.acquire()
    lock.release()


def test_files_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    code = subprocess.run(
        ["bash", "-c", f"umask 002 && {sys.executable} -m g4seg.cli {' '.join(BASE)} --data.init_args.limit 1 "
                       f"--output_dir {out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
    ).returncode  # fmt: skip
    assert code == 0
    for path in [out / "metrics.json", out / "run.json", *out.glob("records/*.json"), *out.glob("masks/*/*.png")]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o664), path


def test_save_generated_says_what_it_will_write(tmp_path, done_run):
    """Asked for generated images, a run says up front when it will write none (no injector)
    or not for every sample (samples an earlier run finished are not redone)."""
    code, _, err = cli(*BASE, "--output_dir", str(done_run), "--save_generated", "true")
    assert code == 0, err[-2000:]
    assert "g4seg: --save_generated: no strategy of this config generates images; nothing will be written" in err
    demo = ["predict", "--config", demo_with(tmp_path, "identity", "g4seg_emi"), "--data.init_args.limit", "2", "--scoring.bootstrap", "0",
            "--output_dir", str(tmp_path / "demo")]  # fmt: skip
    assert cli(*demo)[0] == 0
    code, _, err = cli(*demo, "--save_generated", "true")
    assert code == 0, err[-2000:]
    assert ("g4seg: --save_generated: 2 samples were finished by an earlier run without their generated images and "
            "are not redone; use another --output_dir (or --fresh true) to have them all") in err
    assert not (tmp_path / "demo" / "generated").exists()
