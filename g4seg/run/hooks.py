"""The Lightning side of a run folder: the events at which it is claimed, released and
scored. The folder and the scoring are plain objects (`folder.py`, `scoring.py`) so that
`g4seg report` reads a run without importing Lightning."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, check_resampling
from ..report.gallery import DEFAULT_GALLERY
from ..evaluation.metrics import SHOWN
from ..report.write import ReportSettings, check_shown
from .folder import RunFolder
from .refiner_pool import auto_workers, check_workers, main_importable
from .scoring import score


class FolderHooks(Callback):
    """Claims the folder when the Trainer sets up (unless the CLI claimed it before) and
    releases its lock when the run ends, also after an exception (Lightning skips teardown
    hooks then, and a caller in this process may run again)."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.folder.claim_for(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.folder.release()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.folder.release()


class Scoring(Callback):
    """Args:
    folder: the run's folder (records in, report out).
    metrics: the table's and plot's metrics, of miou, boundary_iou, mba, miou_image
        (metrics.json and metrics.csv always hold all of them).
    bootstrap: resamples of the paired bootstrap behind every gain's 95% CI (0: none).
    seed: the bootstrap's seed.
    gallery: best and worst samples report.html shows per strategy and stratum.
    """

    def __init__(self, folder: RunFolder, metrics: Sequence[str] = SHOWN, bootstrap: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED, gallery: int = DEFAULT_GALLERY) -> None:  # fmt: skip
        check_resampling(bootstrap, seed, "scoring.")
        if gallery < 0:
            raise ConfigError(f"scoring.gallery must be >= 0, got {gallery}")
        self.folder = folder
        self.settings = ReportSettings(check_shown(metrics, "scoring.metrics"), bootstrap, seed, gallery)
        self.document: dict | None = None
        self._summary: str | None = None

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("g4seg-records-written")
        if trainer.is_global_zero:
            self.document, table = score(self.folder, self.settings)
            out = self.folder.path
            self._summary = (f"\n{table}\nresults in {out}/ (full table and per-class table: summary.md; metrics.json, "
                             f"metrics.csv, strata.png)\nreport: {(out / 'report.html').resolve()}")  # fmt: skip

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """The summary goes out once the progress bar has finished (its last redraw would
        otherwise land below the report's path)."""
        if self._summary:
            print(self._summary)
            self._summary = None


class RefinerWorkers(Callback):
    """The module's pool of worker processes for CPU refiners, for the run's duration.

    Args:
        workers: processes per run process; None: the cores this process may use, shared
            among the run's processes on this node (`auto_workers`); 0: in the main process.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers)

    def setup(self, trainer, pl_module, stage: str) -> None:
        workers = self.workers if self.workers is not None else auto_workers(trainer.num_devices)
        if workers and not main_importable():
            print("g4seg: CPU refiners run in the main process: worker processes need a main module that is a file "
                  "(not python -c or stdin)", file=sys.stderr)  # fmt: skip
            workers = 0
        pl_module.start_pool(workers)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        pl_module.stop_pool()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        pl_module.stop_pool()
