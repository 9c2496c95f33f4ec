"""What makes a run fast must not change what it computes or lose what it wrote: the CPU
refiners' worker pool gives the masks of the serial run bit for bit; the writer thread's
results equal the main thread's; a run killed with -9 while the writer is busy resumes to
the numbers of an uninterrupted one; the commonest mistakes are answered before Lightning
and the model libraries are imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REAL, ROOT, cli, finished_run, read_metrics

CRF = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.root", str(REAL), "--data.init_args.limit", "6",
       "--data.init_args.batch_size", "2", "--scoring.bootstrap", "200"]  # fmt: skip
# G4Seg, DenseCRF and their chain: device steps, pooled steps and a pooled step after a device step
CHAIN = ["--model.strategies", "[{name: identity, refiners: [{class_path: strategies.refiners.Identity}]}, "
         "{name: crf, refiners: [{class_path: strategies.refiners.DenseCRF}]}, "
         "{name: g4seg, injector: emi, refiners: [{class_path: strategies.refiners.Correspondence}]}, "
         "{name: g4seg+crf, injector: emi, refiners: [{class_path: strategies.refiners.Correspondence}, "
         "{class_path: strategies.refiners.DenseCRF}]}]"]  # fmt: skip
DEMO4 = ["predict", "--config", "configs/demo.yaml", "--data.init_args.limit", "4", "--scoring.bootstrap", "200", *CHAIN]


def masks(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "masks").rglob("*.png"))}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """Everything in the main process: no pool, no writer thread."""
    return finished_run(tmp_path_factory.mktemp("serial"), *DEMO4, "--refiner_workers", "0", "--writer.background", "false")


def test_the_worker_pool_and_the_writer_thread_give_the_serial_run_bit_for_bit(tmp_path, serial):
    out = tmp_path / "pooled"
    code, _, err = cli(*DEMO4, "--refiner_workers", "2", "--writer.background", "true", "--output_dir", str(out))
    assert code == 0, err[-3000:]
    assert masks(out) == masks(serial) and len(masks(out)) == 4 * 5
    assert read_metrics(out) == read_metrics(serial)


def test_refiner_workers_is_checked_and_changes_no_number(tmp_path, serial):
    code, _, err = cli(*DEMO4, "--refiner_workers", "-1", "--output_dir", str(tmp_path / "bad"))
    assert code == 2 and "--refiner_workers must be a whole number >= 0" in err
    # a resume with another worker count is the same run (it changes no number)
    code, out, err = cli(*DEMO4, "--refiner_workers", "1", "--output_dir", str(serial))
    assert code == 0 and "4 samples already done" in out + err, err[-2000:]


def records(out: Path) -> int:
    folder = out / "records"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def descendants(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in path.read_text().split()] if path.exists() else []
    return kids + [g for k in kids for g in descendants(k)]


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[-1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def test_kill_9_while_the_writer_is_busy_then_resume(tmp_path):
    """SIGKILL lands while results are queued for the writer thread and CRFs are in the pool:
    what was written is whole, nothing is left running, and the rerun ends where a run that
    never stopped ends."""
    args = [*CRF, "--data.init_args.limit", "12", "--data.init_args.batch_size", "1", "--refiner_workers", "2",
            "--writer.background", "true"]  # fmt: skip
    reference = finished_run(tmp_path / "whole", *args)
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "g4seg.cli", *args, "--output_dir", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while records(out) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    helpers = descendants(proc.pid)  # the pool's forkserver and workers (and the DataLoader's, if any)
    assert helpers, "no worker process to leave behind"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done = records(out)
    assert 3 <= done < 12, done
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(p) for p in helpers):
        time.sleep(0.1)
    assert not [p for p in helpers if alive(p)], "a worker outlived the killed run"
    code, stdout, err = cli(*args, "--output_dir", str(out))
    assert code == 0, err[-3000:]
    assert f"{done} samples already done" in stdout + err
    assert read_metrics(out) == read_metrics(reference)


def test_a_mistyped_class_preset_is_answered_before_lightning_is_imported():
    code = ("import sys\nfrom g4seg.cli import main\ntry:\n    main(['predict', '--config', 'configs/densecrf.yaml', "
            "'--data.init_args.classes', 'vocc'])\nexcept SystemExit as e:\n    print(e.code, sorted(m for m in "
            "('lightning', 'torch', 'diffusers', 'transformers') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.strip().startswith("g4seg: error: unknown class preset 'vocc'")


def test_an_output_folder_under_a_file_is_answered_before_lightning(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = ("import sys\nfrom g4seg.cli import main\ntry:\n    main(['predict', '--config', 'configs/densecrf.yaml', "
            f"'--output_dir={blocker}/run'])\nexcept SystemExit as e:\n    print(e.code, 'lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 False", proc.stdout + proc.stderr
    assert f"{blocker}/run: output folder is not writable ({blocker} is a file)" in proc.stderr


def test_early_checks_leave_what_they_cannot_read_to_the_full_parser():
    from g4seg.run.early_checks import early_checks, settings

    # a value in a form the early check does not read, and overrides winning over the config file
    assert settings(["--config", "configs/densecrf.yaml", "--data.init_args.classes", "context"])[
        "data.init_args.classes"] == "context"  # fmt: skip
    early_checks(["--config", "configs/densecrf.yaml", "--data.init_args.classes=[background, cat]"])
    early_checks(["--config", "no/such/file.yaml"])  # the CLI names a missing config file itself
