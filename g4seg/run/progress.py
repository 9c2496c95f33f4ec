"""A progress bar that counts images, not batches: "Predicting 812/1449" means samples, the
unit every figure of the run is in. Samples a resumed run skips count as they pass."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def samples_of_this_process(trainer) -> int:
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None) or getattr(loader, "sampler", None)
    try:
        return len(sampler)
    except TypeError:
        return int(trainer.num_predict_batches[0])


class _CountsSamples:
    """Mixed into Lightning's bars: the total and the position in samples."""

    _samples_done = 0

    @property
    def total_predict_batches_current_dataloader(self):
        return samples_of_this_process(self.trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._samples_done = 0
        super().on_predict_start(trainer, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._samples_done += len(batch)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, self._samples_done - 1, dataloader_idx)


class RichSampleBar(_CountsSamples, RichProgressBar):
    pass


class TQDMSampleBar(_CountsSamples, TQDMProgressBar):
    pass


def sample_progress_bar():
    return RichSampleBar() if _RICH_AVAILABLE else TQDMSampleBar()
