"""Boundary-sensitive counts of one label map against the ground truth.

Region IoU barely moves when a refiner fixes a boundary, so refinement papers also report
two boundary measures, written here to their references' definitions (torchmetrics has
neither):

* **Boundary IoU** (Cheng et al., CVPR 2021; bowenc0221/boundary-iou-api
  `mask_to_boundary`): the boundary of a binary mask is the mask minus its erosion by d
  pixels (3x3 kernel, d iterations, the mask zero-padded by one pixel so that the image
  border counts as boundary), d = round(dilation_ratio x image diagonal), at least 1. Per
  class c: |G_d and P_d| and |G_d or P_d| over the scored pixels (GT != 255), summed over
  images, so a class's Boundary IoU is a ratio of integer sums like its IoU.
* **Boundary accuracy**, averaged into mBA (CascadePSP `util/compute_boundary_acc.py`): for
  5 radii r_i = 1 + int((max_r - 1) / 5 * i), max_r = (H + W) / 300, the band is the
  morphological gradient of the GT mask with an ellipse of size 2r+1; accuracy = share of
  the band's scored pixels where prediction and GT agree (both in c or both not); mean over
  the radii. One value per (image, class) instance with c in the GT; the GT's ignore pixels
  are left out of the band, as CascadePSP's multi-class variant leaves out void.

The ground-truth side (G_d, the bands) is the same for every label source of a sample, so
`GroundTruthBoundaries` computes it once and each source adds only its own erosions.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..types import IGNORE_INDEX

DEFAULT_DILATION_RATIO = 0.02
BA_STEPS = 5
_KERNEL3 = np.ones((3, 3), dtype=np.uint8)


def dilation_pixels(h: int, w: int, ratio: float) -> int:
    return max(1, int(round(ratio * math.sqrt(h * h + w * w))))


def mask_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """bool [H, W]: mask minus its erosion by d, the image border counted as boundary."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL3, iterations=d)[1 : h + 1, 1 : w + 1]
    return mask.astype(bool) & ~eroded.astype(bool)


def ba_radii(h: int, w: int) -> list[int]:
    max_r = (w + h) / 300
    return [1 + int((max_r - 1) / BA_STEPS * i) for i in range(BA_STEPS)]


class GroundTruthBoundaries:
    """The GT side of both measures for one image, reused by every label source."""

    def __init__(self, gt: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> None:
        self.gt = np.asarray(gt)
        self.valid = self.gt != IGNORE_INDEX
        h, w = self.gt.shape
        self.d = dilation_pixels(h, w, dilation_ratio)
        self.radii = ba_radii(h, w)
        self._masks: dict[int, np.ndarray] = {}
        self._boundary: dict[int, np.ndarray] = {}
        self._bands: dict[int, list[np.ndarray]] = {}

    def mask(self, c: int) -> np.ndarray:
        if c not in self._masks:
            self._masks[c] = self.gt == c
        return self._masks[c]

    def boundary(self, c: int) -> np.ndarray:
        if c not in self._boundary:
            self._boundary[c] = mask_boundary(self.mask(c), self.d)
        return self._boundary[c]

    def bands(self, c: int) -> list[np.ndarray]:
        """The scored pixels of each radius's band; empty when c is not in the scored GT."""
        if c not in self._bands:
            gt_c = self.mask(c).astype(np.uint8)
            self._bands[c] = [] if not bool((self.mask(c) & self.valid).any()) else [
                (cv2.morphologyEx(gt_c, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0)
                & self.valid
                for r in self.radii
            ]
        return self._bands[c]

    def boundary_counts(self, pred: np.ndarray, classes) -> tuple[dict[int, int], dict[int, int]]:
        """Per class: scored pixels in G_d and P_d, and in G_d or P_d."""
        inter, union = {}, {}
        for c in classes:
            g, p = self.boundary(c), mask_boundary(pred == c, self.d)
            u = int(((g | p) & self.valid).sum())
            if u:
                inter[c], union[c] = int((g & p & self.valid).sum()), u
        return inter, union

    def boundary_accuracy(self, pred: np.ndarray, classes) -> dict[int, float]:
        """Per foreground class of the GT: mean over the radii of the band accuracy."""
        out = {}
        for c in classes:
            if c == 0 or c == IGNORE_INDEX or not self.bands(c):
                continue
            agree = (pred == c) == self.mask(c)
            accs = [int((agree & band).sum()) / n for band in self.bands(c) if (n := int(band.sum()))]
            if accs:
                out[c] = sum(accs) / len(accs)
        return out
