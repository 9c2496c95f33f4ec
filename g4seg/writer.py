"""Writes results as they are made, and lets a rerun pick up where a run stopped.

Each sample's masks are written first and its record last, each atomically, so a record
on disk means the sample is complete. On start the writer tells the datamodule which
ids are done (they are not loaded again) and restores their counts into the metric on
rank 0 only, so after DDP reduction every sample is counted exactly once.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from .records import (
    MANIFEST,
    atomic_write_bytes,
    atomic_write_json,
    from_record,
    load_records,
    record_path,
    safe_name,
    to_record,
)
from .report import finish, mean_seconds, write_report
from .types import SampleResult


def voc_palette() -> list[int]:
    """The standard PASCAL VOC bit-interleaved colour map (256 entries)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


PALETTE = voc_palette()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def label_png(labels: np.ndarray) -> bytes:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    return png_bytes(im)


class ResultWriter(BasePredictionWriter):
    """Masks (VOC palette PNGs), generated images and per-sample records under `output_dir`.

    Args:
        output_dir: run folder; rerunning into it resumes.
        save_masks: write a label PNG per sample and source (baseline and each strategy).
        save_generated: write the injectors' generated images (one per sample and class).
    """

    def __init__(self, output_dir: str = "outputs/run", save_masks: bool = True, save_generated: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.save_masks = save_masks
        self.save_generated = save_generated
        self.previous: list[dict] = []
        self.config: dict | None = None  # the resolved CLI config, when run from the CLI

    def setup(self, trainer, pl_module, stage: str) -> None:
        out = self.output_dir
        manifest = {
            "strategies": pl_module.strategy_names,
            "class_names": list(pl_module.class_names or trainer.datamodule.class_names),
            "strata_edges": pl_module.strata_edges,
        }
        if self.config is not None:
            manifest["config"] = self.config
        path = out / MANIFEST
        if path.is_file():
            old = json.loads(path.read_text())
            for key in ("strategies", "class_names"):
                if old.get(key) != manifest[key]:
                    raise ValueError(
                        f"{out} holds a run with other {key} ({old.get(key)} vs {manifest[key]}); "
                        "use another output folder or delete this one"
                    )
        trainer.strategy.barrier("g4seg-manifest-read")
        if trainer.is_global_zero:
            atomic_write_json(path, manifest)
        self.previous = load_records(out)
        done = frozenset(r["id"] for r in self.previous)
        if done:
            rank_zero_info(f"g4seg: resuming in {out}: {len(done)} samples already done, skipping them")
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "done_ids"):
            dm.done_ids = done

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            for record in self.previous:
                pl_module.metrics.update(from_record(record))

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        for result in prediction or []:
            self.write_result(result)

    def write_result(self, result: SampleResult) -> None:
        name = safe_name(result.id)
        if self.save_masks:
            for source, labels in result.labels.items():
                atomic_write_bytes(self.output_dir / "masks" / source / f"{name}.png", label_png(labels.numpy()))
        if self.save_generated:
            for injector, gen in result.generated.items():
                for class_id, image in zip(gen.class_ids, gen.images):
                    path = self.output_dir / "generated" / injector / f"{name}_{class_id}.png"
                    atomic_write_bytes(path, png_bytes(Image.fromarray(image.numpy())))
        atomic_write_json(record_path(self.output_dir, result.id), to_record(result))

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        metrics = pl_module.metrics.compute(pl_module.class_names)  # collective: every rank
        trainer.strategy.barrier("g4seg-records-written")
        if trainer.is_global_zero:
            records = load_records(self.output_dir)
            table = write_report(self.output_dir, finish(metrics, records), mean_seconds(records))
            print(f"\n{table}\nresults in {self.output_dir}/ (metrics.json, metrics.csv, summary.md, strata.png)")
