"""Worker processes for the refiners that run on the CPU (DenseCRF), so that they work on
the batch's samples side by side, and beside the device's work, instead of one sample at a
time in the main process: DenseCRF costs 0.25 s for a demo image and 6.6 s for a 512 x 512
image with 21 classes, which beside G4Seg on a GPU set the pace of the whole run.

A refiner says it belongs here with `runs_on_cpu = True`. Each worker gets every such
refiner of the run once, when it starts; a task carries the sample and the probabilities
as NumPy arrays (plain pickles: no shared-memory tensors to leak) and returns the refined
probabilities with the seconds they took in the worker. The workers are forked from a
forkserver that imported torch and the strategies once, so a second run in one process
starts its pool in well under a second, and a CUDA context in the parent is never forked.
A worker ends by itself when the run's process is gone (see `_watch`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..interfaces import Refiner
from ..types import ClassProbs, Generated, Sample

_REFINERS: dict[str, Refiner] = {}


def auto_workers(processes_on_node: int = 1) -> int:
    """The free cores: those of this process's share of the node (its cores divided among the
    run's processes there) beyond the two that the main process and its loader and writer
    keep busy. None on a 2-core machine, where workers only took cores from the model's
    own threads (the demo: 89 s with 2 workers, 84 s without)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, cores // max(1, processes_on_node) - 2)


def main_importable() -> bool:
    """Workers of a forkserver import the main module again (multiprocessing's rule): it must
    be a file or a module (`python -m`, a console script, pytest), not `-c` code or stdin."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(main, "__file__", None)
    return bool(spec is not None and spec.name) or bool(path and Path(path).is_file())


def check_workers(workers: int | None) -> int | None:
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 0):
        raise ConfigError(f"--refiner_workers must be a whole number >= 0 (0: in the main process), got {workers!r}")
    return workers


def leave_signals_to_the_run() -> None:
    """A worker ignores SIGINT and SIGTERM: Ctrl-C and a scheduler signal the whole process
    group, and the run stops itself after its batch in flight (`stopping.py`), which needs
    its workers."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # killed but not yet reaped by its own parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] not in ("Z", "X")
    except OSError:
        return True  # no /proc: trust kill(0)


def _watch(run_pid: int) -> None:
    """Ends the worker when the run's process is gone (kill -9, a crash): a pool's workers
    hold each other's pipes open and their parent is the forkserver, so neither an EOF nor a
    parent-death signal would ever reach them; with them gone, the forkserver exits too."""
    while _alive(run_pid):
        time.sleep(0.5)
    os._exit(0)


def _start(refiners: dict[str, Refiner], run_pid: int) -> None:
    leave_signals_to_the_run()
    threading.Thread(target=_watch, args=(run_pid,), name="g4seg-run-watch", daemon=True).start()
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    _REFINERS.clear()
    _REFINERS.update(refiners)


def _refine(key: str, payload: dict) -> tuple[np.ndarray, tuple[str, ...], float]:
    sample, probs, generated = unpack(payload)
    start = time.perf_counter()
    with torch.no_grad():
        out = _REFINERS[key].refine(sample, probs, generated)
    seconds = time.perf_counter() - start
    if not torch.equal(out.class_ids, probs.class_ids):
        raise RuntimeError(f"{key}: a pooled refiner must keep the classes it was given")
    return out.probs.numpy(), out.notes, seconds


def pack(sample: Sample, probs: ClassProbs, generated: Generated | None) -> dict:
    payload = {"id": sample.id, "image": sample.image.numpy(), "class_names": sample.class_names,
               "class_ids": probs.class_ids.numpy(), "probs": probs.probs.numpy(), "notes": probs.notes}  # fmt: skip
    if generated is not None:
        payload["generated"] = (generated.sample_id, generated.class_ids, generated.images.numpy(), generated.injector)
    return payload


def unpack(payload: dict) -> tuple[Sample, ClassProbs, Generated | None]:
    """The sample as the refiner sees it in the main process, without its ground truth
    (a refiner never reads it)."""
    image = torch.from_numpy(payload["image"])
    probs = ClassProbs(torch.from_numpy(payload["class_ids"]), torch.from_numpy(payload["probs"]), payload["notes"])
    no_gt = torch.empty(0, dtype=torch.int64)
    sample = Sample(payload["id"], image, no_gt, payload["class_names"], probs)
    generated = None
    if "generated" in payload:
        sid, class_ids, images, injector = payload["generated"]
        generated = Generated(sid, class_ids, torch.from_numpy(images), injector)
    return sample, probs, generated


class RefinerPool:
    """Args:
    refiners: {key: refiner} of every CPU refiner step of the run.
    workers: worker processes.
    """

    def __init__(self, refiners: dict[str, Refiner], workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        # imported once by the server, not by every worker (the core names no strategy module itself)
        # pool_server: the server ignores SIGINT/SIGTERM, and its workers inherit that from their start
        modules = sorted({type(r).__module__ for r in refiners.values()})
        context.set_forkserver_preload(["torch", "numpy", "g4seg.run.pool_server", *modules])
        # pickled once per worker as they are: the pool starts at setup, before Lightning moves
        # the module to its device, so a CPU refiner's tensors are still on the CPU
        self._executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                             initargs=(refiners, os.getpid()))  # fmt: skip

    def submit(self, key: str, sample: Sample, probs: ClassProbs, generated: Generated | None) -> Future:
        return self._executor.submit(_refine, key, pack(sample, probs, generated))

    @staticmethod
    def result(future: Future, probs: ClassProbs) -> tuple[ClassProbs, float]:
        """The refined probabilities (the input's classes and notes carried over) and seconds."""
        array, notes, seconds = future.result()
        return ClassProbs(probs.class_ids, torch.from_numpy(array), tuple(notes)), seconds

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
