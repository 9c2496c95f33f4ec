"""1 vs N processes on the same run, end to end and in steady state.

    python scripts/benchmark.py --only ddp [--ddp-images 200] [--ddp-launch lightning torchrun]

The bundled real VOC images are repeated under new ids (a link farm) up to --ddp-images;
each run is the CLI as a user types it (`g4seg predict --config configs/densecrf.yaml`, CPU,
gloo). End to end is the wall time of the command; steady state is the rate at which
records appear on disk between the first and the last one (so start-up, the DDP rendezvous
and rank 0's report at the end are outside it); the report's own time is read from the gap
between the last record and the command's exit. Two launchers: Lightning's own (rank 0
starts the other ranks once it has built the model, so their start-up is serial) and
`torchrun --standalone` (all ranks start together).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.batch_size", "1",
        "--trainer.accelerator", "cpu"]  # fmt: skip


def link_farm(source: Path, target: Path, n: int) -> None:
    images = sorted((source / "JPEGImages").glob("*.jpg"))
    for sub in ("JPEGImages", "SegmentationClass"):
        (target / sub).mkdir(parents=True)
    for i in range(n):
        image = images[i % len(images)]
        new = f"{i:05d}_{image.stem}"
        (target / "JPEGImages" / f"{new}.jpg").symlink_to(image.resolve())
        (target / "SegmentationClass" / f"{new}.png").symlink_to((source / "SegmentationClass" / f"{image.stem}.png").resolve())


def timed_run(data: Path, out: Path, processes: int, launch: str) -> dict[str, float]:
    args = [*BASE, "--data.init_args.root", str(data), "--output_dir", str(out)]
    if processes > 1:
        args += ["--trainer.devices", str(processes), "--trainer.strategy", "ddp"]
    if launch == "torchrun" and processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "g4seg.cli", *args]  # fmt: skip
    else:
        command = [sys.executable, "-m", "g4seg.cli", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return record_rates(out, start, end)


def record_rates(out: Path, start: float, end: float) -> dict[str, float]:
    """Rates read off the run folder: records appear as samples finish."""
    stamps = sorted(p.stat().st_mtime for p in (out / "records").glob("*.json"))
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"end_to_end_s": end - start, "to_first_record_s": stamps[0] - start, "records_per_s": steady,
            "after_last_record_s": end - stamps[-1], "n": len(stamps)}  # fmt: skip


def ddp_table(images: int, launchers: list[str], processes: int = 2) -> None:
    source = ROOT / "data" / "real" / "voc2012"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        link_farm(source, data, images)
        one = timed_run(data, Path(tmp) / "one", 1, "lightning")
        print(f"\nDenseCRF on {images} real VOC images (repeated under new ids), OMP_NUM_THREADS=1, "
              f"{os.cpu_count()} CPUs")
        print(f"{'run':<24} {'end to end':>11} {'to 1st record':>14} {'records/s':>10} {'report etc.':>12} "
              f"{'x end to end':>13} {'x steady':>9}")  # fmt: skip
        rows = [("1 process", one)]
        for launch in launchers:
            rows.append((f"{processes} processes ({launch})", timed_run(data, Path(tmp) / launch, processes, launch)))
        for name, r in rows:
            print(f"{name:<24} {r['end_to_end_s']:>10.1f}s {r['to_first_record_s']:>13.1f}s {r['records_per_s']:>10.2f} "
                  f"{r['after_last_record_s']:>11.1f}s {one['end_to_end_s'] / r['end_to_end_s']:>12.2f}x "
                  f"{r['records_per_s'] / one['records_per_s']:>8.2f}x")  # fmt: skip
