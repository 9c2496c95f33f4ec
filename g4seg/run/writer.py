"""Writes each sample's results as they are made: masks first, its record last, each
atomically, so a record on disk means the sample is complete. Only writes: the folder's
identity belongs to the `RunFolder`, the numbers to `Scoring`."""

from __future__ import annotations

from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from ..evaluation.records import record_path, to_record
from ..files import atomic_write_bytes, atomic_write_json, safe_name
from ..report.palette import label_png, png_bytes
from ..types import SampleResult
from .folder import RunFolder


class ResultWriter(BasePredictionWriter):
    """Masks (VOC palette PNGs), generated images and per-sample records in the run folder.

    Args:
        folder: the run's folder.
        save_masks: write a label PNG per sample and source (baseline and each strategy).
        save_generated: write the injectors' generated images (one per sample and class).
    """

    def __init__(self, folder: RunFolder, save_masks: bool = True, save_generated: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.folder, self.save_masks, self.save_generated = folder, save_masks, save_generated

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        for result in prediction or []:
            self.write_result(result)

    def write_result(self, result: SampleResult) -> None:
        out, name = self.folder.path, safe_name(result.id)
        if self.save_masks:
            for source, labels in result.labels.items():
                atomic_write_bytes(out / "masks" / source / f"{name}.png", label_png(labels.numpy()))
        if self.save_generated:
            for injector, gen in result.generated.items():
                for class_id, image in zip(gen.class_ids, gen.images):
                    path = out / "generated" / injector / f"{name}_{class_id}.png"
                    atomic_write_bytes(path, png_bytes(Image.fromarray(image.numpy())))
        atomic_write_json(record_path(out, result.id), to_record(result))
