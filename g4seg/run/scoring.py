"""Where the numbers come from: at the end of a run (and in `g4seg report`), the run
folder's records are summarised (`evaluation.summary`) and the report is written.

Every process has written its records when the epoch ends; after a barrier, the main
process reads them (the ones the run folder loaded at its claim are not read again) and
computes every metric from them. DDP, resume and a later `g4seg report` therefore see the
same records and print the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError, RunFolderError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.metrics import SHOWN, check_edges
from ..evaluation.summary import summarize
from ..report.write import ReportSettings, check_shown, write_report
from .folder import RunFolder


def score(folder: RunFolder, settings: ReportSettings, edges: Sequence[float] | None = None) -> tuple[dict, str]:
    """(metrics document, markdown table) of the folder's records; writes the report."""
    manifest = folder.manifest or {}
    results = folder.results()
    if not results:
        raise RunFolderError(f"{folder.path}: no per-sample records yet")
    edges = check_edges(edges, "--edges") if edges else manifest["strata_edges"]
    document = summarize(results, manifest["strategies"], manifest["class_names"], edges, settings.bootstrap, settings.seed)
    return document, write_report(folder.path, document, results, manifest, settings)


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
                 seed: int = DEFAULT_SEED, gallery: int = 12) -> None:  # fmt: skip
        if bootstrap < 0 or gallery < 0:
            raise ConfigError(f"scoring.bootstrap and scoring.gallery must be >= 0, got {bootstrap} and {gallery}")
        self.folder = folder
        self.settings = ReportSettings(check_shown(metrics, "scoring.metrics"), bootstrap, seed, gallery)
        self.document: dict | None = None

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("g4seg-records-written")
        if trainer.is_global_zero:
            self.document, table = score(self.folder, self.settings)
            out = self.folder.path
            print(f"\n{table}\nresults in {out}/ (full table: summary.md; metrics.json, metrics.csv, strata.png)\n"
                  f"report: {(out / 'report.html').resolve()}")
