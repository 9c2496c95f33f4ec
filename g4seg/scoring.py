"""Where the numbers come from: the one place that feeds the metrics and writes the report.

The module turns each sample into a SampleResult (label maps and per-class pixel counts,
`metrics.pixel_counts`). This callback feeds each new result to the module's
`StrategyMetrics` (torchmetrics states: integer sums, so DDP reduction is exact; they live
on the module so that Lightning puts them on its device), adds the samples finished by an
earlier run (from their records, on rank 0 only, so that after the reduction every sample
counts once), computes the metrics at the end of the epoch (a collective, on every rank)
and has rank 0 write metrics.json, the CSV, the table and the plot. `g4seg report`
recomputes the same from the records alone (`report.rebuild`).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from .records import dataset_ids, from_record, load_records
from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from .errors import ConfigError
from .report import SHOWN, ReportSettings, check_shown, finish, write_report


class Scoring(Callback):
    """Args:
    output_dir: the run folder (records in, report out).
    metrics: the table's and plot's metrics, of miou, boundary_iou, mba, miou_image
        (metrics.json and metrics.csv always hold all of them).
    bootstrap: resamples of the paired bootstrap behind every gain's 95% CI (0: none).
    seed: the bootstrap's seed.
    gallery: best and worst samples report.html shows per strategy and stratum.
    """

    def __init__(self, output_dir: str = "outputs/run", metrics: list[str] = list(SHOWN),
                 bootstrap: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, gallery: int = 12) -> None:  # fmt: skip
        if bootstrap < 0 or gallery < 0:
            raise ConfigError(f"scoring.bootstrap and scoring.gallery must be >= 0, got {bootstrap} and {gallery}")
        self.output_dir = Path(output_dir)
        self.settings = ReportSettings(check_shown(metrics, "scoring.metrics"), bootstrap, seed, gallery)
        self.ids: list[str] | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        self.ids = dataset_ids(trainer)
        if trainer.is_global_zero:
            for record in load_records(self.output_dir, self.ids):
                if record["id"] in getattr(dm, "done_ids", ()):
                    pl_module.metrics.update(from_record(record))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for result in outputs or []:
            pl_module.metrics.update(result)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        metrics = pl_module.metrics.compute(pl_module.class_names)  # collective: every rank
        trainer.strategy.barrier("g4seg-records-written")
        if trainer.is_global_zero:
            results = [from_record(r) for r in load_records(self.output_dir, self.ids)]
            document = finish(metrics, results, len(pl_module.class_names), pl_module.strata_edges, self.settings)
            table = write_report(self.output_dir, document, results, self.settings)
            print(f"\n{table}\nresults in {self.output_dir}/ (metrics.json, metrics.csv, summary.md, strata.png)\n"
                  f"report: {(self.output_dir / 'report.html').resolve()}")
