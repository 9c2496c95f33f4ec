"""Where coarse masks come from: a segmenter's files, or degraded ground truth.

Synthetic degradation lets a user study how a refiner's gain depends on input quality
without running any segmenter: each (image, class) mask is degraded until its IoU hits a
target drawn from a requested range, deterministically from the sample id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage

from g4seg.interfaces import CoarseProducer
from g4seg.seeding import stable_seed
from g4seg.softening import probs_from_labels
from g4seg.types import IGNORE_INDEX, ClassProbs, Sample

from .io import DataError, read_label_map, read_probabilities


class CoarseSource(ABC):
    """Makes the coarse prediction of one sample; a source that reads a file notes its hash
    in `digests` (path -> SHA-256), so a resumed run recomputes a sample whose file changed."""

    @abstractmethod
    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int,
             class_names: Sequence[str] | None = None, digests: dict[str, str] | None = None) -> ClassProbs: ...  # fmt: skip


class ImageByImageProducer(CoarseProducer, CoarseSource):
    """A model producer that segments one image at a time, as the released codes do (each
    image keeps its own size: resizing rules, sliding windows or the model's processor), so
    the batch is `make` per sample."""

    def produce(self, samples: Sequence[Sample]) -> list[ClassProbs]:
        return [self.make(s.id, s.image.numpy(), s.gt.numpy(), len(s.class_names), s.class_names) for s in samples]


class CoarseFromFiles(CoarseSource):
    """A segmenter's output: `<id>.png` label map, or `<id>.npz` / `<id>.npy` probabilities.

    Args:
        folder: where the files lie, named by sample id.
        soften_sigma: Gaussian blur (pixels) turning hard label PNGs into soft maps (labels kept).
        confidence: probability given to the labelled class of a hard label PNG.
    """

    FILES_NEEDED = {"folder": "the segmenter's masks (<id>.png) or probabilities (<id>.npz / .npy), one per sample"}

    def __init__(self, folder: str, soften_sigma: float = 0.0, confidence: float = 1.0) -> None:
        self.folder = Path(folder)
        self.soften_sigma = soften_sigma
        self.confidence = confidence

    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int, class_names=None,
             digests=None) -> ClassProbs:  # fmt: skip
        size = image.shape[:2]
        for suffix in (".npz", ".npy"):
            path = self.folder / f"{sample_id}{suffix}"
            if path.exists():
                ids, probs = read_probabilities(path, num_classes, size, digests)
                return ClassProbs(torch.from_numpy(ids), torch.from_numpy(probs))
        path = self.folder / f"{sample_id}.png"
        if not path.exists():
            raise DataError(f"{self.folder}: no coarse mask for sample {sample_id!r} (looked for .png, .npz, .npy)")
        labels = read_label_map(path, num_classes, size, what="coarse mask", digests=digests)
        ids = np.union1d([0], labels[labels != IGNORE_INDEX])
        return probs_from_labels(labels, ids, self.soften_sigma, self.confidence)


class SyntheticDegradation(CoarseSource):
    """Degraded ground truth landing in a requested initial-IoU range.

    For each foreground class of the GT a target IoU is drawn uniformly from `iou_range`
    (percent) with a seed from (seed, sample id, class). Fixed random fields (a smooth
    displacement field, an erosion-or-dilation sign, blob positions) are drawn once, and
    one strength parameter scales them all; bisection on the strength finds the target.
    Because the fields are fixed, the result is a deterministic function of the sample id.

    Args:
        iou_range: (low, high) target IoU in percent.
        ops: any of "boundary" (smooth boundary warping), "morph" (erosion or dilation),
            "blobs" (dropped parts and spurious blobs nearby).
        soften_sigma, confidence: as in `probs_from_labels`.
        seed: global seed, combined with the sample id and class.
    """

    OPS = ("boundary", "morph", "blobs")

    def __init__(
        self,
        iou_range: tuple[float, float] = (20.0, 95.0),
        ops: Sequence[str] = OPS,
        soften_sigma: float = 3.0,
        confidence: float = 1.0,
        seed: int = 0,
        iterations: int = 14,
    ) -> None:
        low, high = iou_range
        if not 0 <= low <= high <= 100:
            raise ValueError(f"iou_range must satisfy 0 <= low <= high <= 100, got {iou_range}")
        unknown = set(ops) - set(self.OPS)
        if unknown or not ops:
            raise ValueError(f"unknown degradation ops {sorted(unknown)}; choose from {self.OPS}")
        self.iou_range = (float(low), float(high))
        self.ops = tuple(ops)
        self.soften_sigma = soften_sigma
        self.confidence = confidence
        self.seed = seed
        self.iterations = iterations

    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int, class_names=None,
             digests=None) -> ClassProbs:  # fmt: skip
        filled = fill_ignored(gt)
        classes = [int(c) for c in np.unique(gt) if c not in (0, IGNORE_INDEX)]
        masks = {c: self.degrade_class(sample_id, c, filled == c, gt) for c in classes}
        labels = np.zeros(gt.shape, dtype=np.int64)
        for c in sorted(classes, key=lambda c: -int(masks[c].sum())):  # small objects painted last stay visible
            labels[masks[c]] = c
        for c in classes:  # a class covered entirely by a smaller one's blob gets its own pixels back
            if not (labels == c).any():
                labels[masks[c] & (filled == c)] = c
        return probs_from_labels(labels, [0, *classes], self.soften_sigma, self.confidence)

    def degrade_class(self, sample_id: str, class_id: int, mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(stable_seed(self.seed, sample_id, class_id))
        target = rng.uniform(*self.iou_range) / 100.0
        fields = DegradationFields.draw(rng, mask)
        scored = gt != IGNORE_INDEX
        truth = (gt == class_id) & scored

        def iou(strength: float) -> float:
            m = fields.apply(mask, strength, self.ops) & scored
            union = (m | truth).sum()
            return float((m & truth).sum() / union) if union else 1.0

        lo, hi = 0.0, 1.0
        while iou(hi) > target and hi < 16:
            lo, hi = hi, hi * 2
        for _ in range(self.iterations):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if iou(mid) > target else (lo, mid)
        strength = lo if abs(iou(lo) - target) <= abs(iou(hi) - target) else hi
        degraded = fields.apply(mask, strength, self.ops)
        for _ in range(20):  # never erase a class the ground truth has: weaken until something is left
            if degraded.any() or not mask.any():
                break
            strength /= 2
            degraded = fields.apply(mask, strength, self.ops)
        return degraded if degraded.any() else mask.copy()


def fill_ignored(gt: np.ndarray) -> np.ndarray:
    """GT with every ignore pixel given the label of its nearest scored pixel.

    VOC draws a 255 band around objects; degrading `gt == c` as is would leave a
    background ring inside every coarse mask.
    """
    ignored = gt == IGNORE_INDEX
    if not ignored.any() or ignored.all():
        return np.where(ignored, 0, gt)
    _, (iy, ix) = ndimage.distance_transform_edt(ignored, return_indices=True)
    return gt[iy, ix]


class DegradationFields:
    """The random parts of one degradation, scaled by a single strength."""

    def __init__(self, dx, dy, sign, blobs, scale, distance):
        self.dx, self.dy, self.sign, self.blobs, self.scale = dx, dy, sign, blobs, scale
        self.distance = distance  # to the mask (outside) or to its border (inside): morphology as a threshold

    @classmethod
    def draw(cls, rng: np.random.Generator, mask: np.ndarray) -> DegradationFields:
        h, w = mask.shape
        scale = max(4.0, float(np.sqrt(mask.sum())))  # object size in pixels
        smooth = max(3.0, 0.15 * scale)
        noise = rng.standard_normal((2, h, w)).astype(np.float32)
        dx, dy = (cv2.GaussianBlur(n, (0, 0), smooth) for n in noise)
        dx, dy = dx / (dx.std() + 1e-8), dy / (dy.std() + 1e-8)
        inside = np.argwhere(mask)
        ring = np.argwhere(cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(scale // 3)) > 0)
        blobs = []
        for points, value in ((inside, False), (ring, True)):
            for _ in range(2 if len(points) else 0):
                y, x = points[rng.integers(len(points))]
                blobs.append((int(x), int(y), float(rng.uniform(0.1, 0.3)), value))
        sign = int(rng.choice([-1, 1]))
        distance = cv2.distanceTransform(((mask == 0) if sign > 0 else mask).astype(np.uint8), cv2.DIST_L2, 5)
        return cls(dx, dy, sign, blobs, scale, distance)

    def apply(self, mask: np.ndarray, strength: float, ops: Sequence[str]) -> np.ndarray:
        m = mask.astype(np.uint8)
        if strength <= 0:
            return mask.copy()
        if "morph" in ops:
            r = strength * 0.15 * self.scale
            m = (self.distance <= r) if self.sign > 0 else (self.distance > r)
            m = m.astype(np.uint8)
        if "boundary" in ops:
            h, w = m.shape
            amp = strength * 0.12 * self.scale
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            m = cv2.remap(m, xs + amp * self.dx, ys + amp * self.dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        if "blobs" in ops:
            for x, y, rel, value in self.blobs:
                radius = int(round(min(strength, 2.0) * rel * self.scale))
                if radius > 0:
                    cv2.circle(m, (x, y), radius, int(value), thickness=-1)
        return m.astype(bool)
