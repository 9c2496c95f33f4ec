"""Writes results as they are made, and tells a rerun which samples are done.

Each sample's masks are written first and its record last, each atomically, so a record
on disk means the sample is complete. The writer only writes and reads files: the numbers
are computed in `scoring.py`, and whether this folder may take this run at all is decided
in `runfolder.py`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from . import runfolder
from .records import atomic_write_bytes, atomic_write_json, dataset_ids, load_records, record_path, safe_name, to_record
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
        output_dir: run folder; rerunning the same configuration into it resumes.
        save_masks: write a label PNG per sample and source (baseline and each strategy).
        save_generated: write the injectors' generated images (one per sample and class).
        fresh: if the folder holds another run, move it to OUTDIR.old-N instead of refusing.
    """

    def __init__(self, output_dir: str = "outputs/run", save_masks: bool = True, save_generated: bool = False,
                 fresh: bool = False) -> None:  # fmt: skip
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.save_masks = save_masks
        self.save_generated = save_generated
        self.fresh = fresh
        self.config: dict | None = None  # the resolved CLI config, when run from the CLI
        self.lock: runfolder.FolderLock | None = None
        self.claimed = False

    def manifest(self, pl_module, ids: list[str]) -> dict:
        strategies, classes, edges = pl_module.strategy_names, list(pl_module.class_names), pl_module.strata_edges
        manifest = {"strategies": strategies, "class_names": classes, "strata_edges": edges, "ids": ids}
        manifest["fingerprint"] = runfolder.fingerprint(self.config, ids, strategies, classes, edges)
        if self.config is not None:
            manifest["config"] = self.config
        return manifest

    def claim(self, trainer, pl_module, datamodule=None) -> None:
        """Before any work (the CLI calls it before DDP processes start): the main process
        locks the folder and writes run.json; other processes only check that it matches."""
        if self.claimed:
            return
        datamodule = datamodule if datamodule is not None else trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "ids"):
            raise ValueError("ResultWriter needs a datamodule with an `ids` list")
        ids = list(datamodule.ids)
        if pl_module.class_names is None:
            pl_module.class_names = list(datamodule.class_names)
        manifest = self.manifest(pl_module, ids)
        if trainer.global_rank == 0:
            self.lock = runfolder.claim(self.output_dir, manifest, self.fresh)
        else:
            runfolder.check_resumable(self.output_dir, manifest)
        self.claimed = True

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.claimed and trainer.world_size > 1:
            # without the CLI: every rank checks the same files first, so all reach the same verdict
            if pl_module.class_names is None:
                pl_module.class_names = list(trainer.datamodule.class_names)
            runfolder.check_resumable(self.output_dir, self.manifest(pl_module, dataset_ids(trainer) or []))
            trainer.strategy.barrier("g4seg-run-checked")
        self.claim(trainer, pl_module)
        done = frozenset(r["id"] for r in load_records(self.output_dir, dataset_ids(trainer)))
        if done:
            rank_zero_info(f"g4seg: resuming in {self.output_dir}: {len(done)} samples already done, skipping them")
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "done_ids"):
            dm.done_ids = done

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

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
