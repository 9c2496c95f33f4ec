"""Which samples the report shows, and their thumbnails.

People judge a refiner by looking where it helps and where it breaks, so the gallery shows,
per strategy and per stratum, the samples with the largest and the smallest gain. A
sample's gain is its per-image mIoU (refined minus coarse) over its classes, or over its
instances in the stratum. Only the shown samples get thumbnails (small JPEGs under
OUTDIR/report/), so a 1,449-image run's report stays small and quick to build.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError
from ..evaluation.metrics import image_gains
from ..evaluation.tables import CountTables
from ..files import atomic_write_bytes, safe_name
from ..images import read_image
from ..types import BASELINE, IGNORE_INDEX, SampleResult
from .cells import stratum_label
from .palette import PALETTE

DEFAULT_GALLERY = 12  # best and worst samples shown per strategy and stratum in report.html

THUMB_SIDE = 128
REPORT_DIR = "report"
ALL = "all"


@dataclass
class Shown:
    """One sample in one gallery section."""

    id: str
    gain: float  # points


def stratum_names(edges: Sequence[float]) -> list[str]:
    return [ALL] + [stratum_label(lo, hi) for lo, hi in zip(edges, edges[1:])]


def select(tables: CountTables, strategy: str, mask, n: int) -> tuple[list[Shown], list[Shown]]:
    """(best, worst) of the scored samples by their gain in the section whose (image, class)
    entries `mask` marks (`image_gains`: the mIoU over the image's classes, or its instances
    in the stratum): the n largest gains, highest first, and the n smallest not already among
    the best, lowest first."""
    gains, valid = image_gains(tables.sources[BASELINE], tables.sources[strategy], mask)
    ranked = sorted((Shown(i, float(g)) for i, g, v in zip(tables.ids, gains, valid) if v), key=lambda s: (-s.gain, s.id))
    best = ranked[:n]
    chosen = {s.id for s in best}
    worst = [s for s in reversed(ranked) if s.id not in chosen][:n]
    return best, worst


def overlay(image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The label map's VOC colours over the image (half and half); ignore pixels white."""
    if labels is None:
        return image
    palette = np.asarray(PALETTE, dtype=np.uint8).reshape(256, 3)
    colour = palette[labels]
    out = image.astype(np.float32)
    fg = (labels != 0)[..., None]
    out = np.where(fg, 0.45 * out + 0.55 * colour, out)
    out[labels == IGNORE_INDEX] = 255
    return out.astype(np.uint8)


def small(array: np.ndarray, side: int = THUMB_SIDE, labels: bool = False) -> np.ndarray:
    h, w = array.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if labels else cv2.INTER_AREA)


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=78)
    return buf.getvalue()


def read_rgb(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (OSError, ValueError):
        return None


def read_labels(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(Image.open(path), dtype=np.uint8)
    except (OSError, ValueError):
        return None


class Thumbnails:
    """Writes (once) and names the thumbnails of the shown samples, relative to the report's
    folder. The image and ground truth are the files the run read (stored in each record);
    masks and generated images come from the run's folder."""

    def __init__(self, out_dir: Path, results: dict[str, SampleResult], run_dir: Path | None = None) -> None:
        self.out_dir, self.results = Path(out_dir), results
        self.run_dir = Path(run_dir) if run_dir is not None else self.out_dir
        self._last: tuple[str, np.ndarray | None] | None = None  # a row draws one sample's thumbnails in turn
        self.missing_images: set[str] = set()

    def input_file(self, sample_id: str, kind: str) -> Path | None:
        path = self.results[sample_id].files.get(kind) if sample_id in self.results else None
        return Path(path) if path else None

    def image(self, sample_id: str) -> np.ndarray | None:
        if self._last is None or self._last[0] != sample_id:
            found, path = None, self.input_file(sample_id, "image")
            if path is not None:
                try:
                    found = read_image(path)
                except DataError:
                    pass
            if found is None:
                self.missing_images.add(sample_id)
            self._last = (sample_id, found)
        return self._last[1]

    def _path(self, kind: str, sample_id: str) -> tuple[str, Path]:
        rel = f"{REPORT_DIR}/thumbs/{kind}/{safe_name(sample_id)}.jpg"
        return rel, self.out_dir / rel

    def source(self, sample_id: str, source: str) -> str | None:
        """"image", "gt", or a label source (baseline / strategy) as an overlay; drawn at
        thumbnail size, once."""
        rel, path = self._path("image" if source == "image" else "gt" if source == "gt" else f"masks/{source}", sample_id)
        if path.exists():
            return rel
        image = self.image(sample_id)
        if source == "image":
            labels = None
        elif source == "gt":
            gt = self.input_file(sample_id, "gt")
            labels = read_labels(gt) if gt is not None else None
        else:
            labels = read_labels(self.run_dir / "masks" / source / f"{safe_name(sample_id)}.png")
        if labels is None and (source != "image" or image is None):
            return None
        if labels is None:
            atomic_write_bytes(path, jpeg(small(image)))
            return rel
        labels = small(labels, labels=True)
        base = small(image) if image is not None else None
        if base is None or base.shape[:2] != labels.shape:
            base = np.full((*labels.shape, 3), 96, np.uint8)
        atomic_write_bytes(path, jpeg(overlay(base, labels)))
        return rel

    def generated(self, sample_id: str, injector: str, class_id: int) -> str | None:
        rel, path = self._path(f"generated/{injector}/{class_id}", sample_id)
        if path.exists():
            return rel
        source = self.run_dir / "generated" / injector / f"{safe_name(sample_id)}_{class_id}.png"
        array = read_rgb(source) if source.is_file() else None
        if array is None:
            return None
        atomic_write_bytes(path, jpeg(small(array)))
        return rel
