"""Writes each sample's results as they are made: masks first, its record last, each
atomically, so a record on disk means the sample is complete. Only writes: the folder's
identity belongs to the `RunFolder`, the numbers to `Scoring`.

The counts, the PNG encoding and the writes run on a writer thread while the main thread
starts the next batch on the device: on a GPU that per-sample CPU work was more than half
of a run's wall time (docs/gpu_check_h200.json, before this). The queue between them is
bounded, so a slow disk holds the model back instead of filling the memory. A result is
acknowledged once its record is on disk; whatever is still queued when the process dies is
simply not done, and the resume recomputes it. A clean stop (end of the epoch, a signal,
an exception elsewhere) drains the queue first.
"""

from __future__ import annotations

import collections
import queue
import threading
import time

from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from ..evaluation.records import record_path, to_record
from ..files import atomic_write_bytes, atomic_write_json, safe_name
from ..report.palette import label_png, png_bytes
from ..types import SampleResult
from .folder import RunFolder

QUEUE_BATCHES = 2  # batches the main thread may run ahead of the disk (each holds its label maps, images, pool work)


class ResultWriter(BasePredictionWriter):
    """Masks (VOC palette PNGs), generated images and per-sample records in the run folder.

    Args:
        folder: the run's folder.
        save_masks: write a label PNG per sample and source (baseline and each strategy).
        save_generated: write the injectors' generated images (one per sample and class).
        background: write on a thread; False: in the calling thread; None (the CLI's way): on
            a thread when the module runs on an accelerator. On the CPU the thread only takes
            cores from the model's own threads (measured: the demo 84 s in the main thread,
            127 s with the thread, on 2 cores).
        stopper: the run's StopOnSignal: a signal during the last batches' writing stops it
            after the result being written (the rest is recomputed on resume).
    """

    def __init__(self, folder: RunFolder, save_masks: bool = True, save_generated: bool = False,
                 background: bool | None = None, stopper=None) -> None:  # fmt: skip
        super().__init__(write_interval="batch")
        self.folder, self.save_masks, self.save_generated = folder, save_masks, save_generated
        self.background, self.stopper = background, stopper
        self._queue: queue.Queue[list[SampleResult] | None] | None = None  # made with the thread (not picklable)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        # the writer thread's seconds per stage (its own clock: benchmarks read it)
        self.seconds: collections.Counter[str] = collections.Counter()

    # the module leaves assembling its results to this thread when it writes in the background
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.background is None:
            self.background = pl_module.device.type != "cpu"
        pl_module.defer_results = self.background

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.put(list(prediction or []))

    def put(self, results: list[SampleResult]) -> None:
        self._raise()
        if not self.background:
            for result in results:
                self.write_result(result)
            return
        if self._thread is None or not self._thread.is_alive():
            self._queue, self._abandoned = queue.Queue(QUEUE_BATCHES), False
            self._thread = threading.Thread(target=self._work, args=(self._queue,), name="g4seg-writer", daemon=True)
            self._thread.start()
        while True:  # a put that blocks forever would hide the writer's error
            try:
                self._queue.put(results, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def _work(self, jobs: queue.Queue) -> None:
        while True:
            results = jobs.get()
            try:
                if results is None:
                    return
                for result in results:
                    if self._error is not None or self._abandoned:  # not written: the rerun recomputes it
                        break
                    self.write_result(result)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, raised there
                self._error = e
            finally:
                jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:  # stays set: nothing more is written after a failed write
            raise self._error

    def _written(self, timeout: float | None) -> bool:
        if self._thread is None or self._queue is None:
            return True
        with self._queue.all_tasks_done:
            if self._queue.unfinished_tasks:
                self._queue.all_tasks_done.wait(timeout)
            return not self._queue.unfinished_tasks

    def drain(self) -> None:
        """Blocks until every result handed over so far is on disk; raises the writer's error."""
        self._written(None)
        self._raise()

    def abandon(self) -> None:
        """Writes nothing more than the result in hand (a stop: the rest is recomputed on resume)."""
        self._abandoned = True
        self._written(None)

    def close(self) -> None:
        if self._thread is not None and self._queue is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._thread = None

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        """Everything written before Scoring (a later callback) reads the records; a signal
        that comes meanwhile stops the run here."""
        while self.stopper is not None and not self._written(0.2):
            if self.stopper.requested() is not None:
                self.abandon()
        self.drain()
        if self.stopper is not None:
            self.stopper.check(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            self.drain()  # what was computed before the failure is kept
        except BaseException:  # noqa: BLE001 - the first exception is the one reported
            pass
        self.close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.close()

    def write_result(self, result: SampleResult) -> None:
        clock = self.seconds
        start = time.perf_counter()
        result.finish()
        now = time.perf_counter()
        clock["results and counts"] += now - start
        out, name = self.folder.path, safe_name(result.id)
        if self.save_masks:
            for source, labels in result.labels.items():
                atomic_write_bytes(out / "masks" / source / f"{name}.png", label_png(labels.numpy()))
        if self.save_generated:
            for injector, gen in result.generated.items():
                for class_id, image in zip(gen.class_ids, gen.images):
                    path = out / "generated" / injector / f"{name}_{class_id}.png"
                    atomic_write_bytes(path, png_bytes(Image.fromarray(image.numpy())))
        clock["PNG encoding and writing"] += (start := time.perf_counter()) - now
        atomic_write_json(record_path(out, result.id), to_record(result))
        clock["record writing"] += time.perf_counter() - start
        clock["samples"] += 1
