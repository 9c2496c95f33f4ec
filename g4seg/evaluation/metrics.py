"""Every metric, defined once, as a function of per-image count tables and image weights.

    metric(table, mask, weights) -> [R] percent

`table` holds one source's per-image counts ([N images, C classes]), `mask` [N, C] the
(image, class) entries in the stratum, `weights` [R, N] how often each image counts in
each of R evaluations. Unit weights ([1, N] ones) give the point estimate; multinomial
weights give the bootstrap's resamples (`bootstrap.py`). The live run, `g4seg report` and
the page call these same functions on the same records, so their numbers cannot differ.

- mIoU: per class, sum of I over sum of U (over images), averaged over classes that occur.
- Boundary IoU: the same on the boundary counts (`boundary.py`).
- mBA: mean of the boundary accuracy over (image, GT class) instances.
- per-image mIoU: each image's mean IoU over its classes, averaged over images.
- pixel accuracy: correct pixels over scored ground-truth pixels; mAcc: per class, correct
  over its ground-truth pixels (summed over images), averaged over classes.

Adding a metric: one count field in `SourceCounts` (if it needs new counts) and one
function here, registered in `METRIC_FUNCTIONS` with a title.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..types import SourceCounts

DEFAULT_EDGES = (0.0, 40.0, 80.0, 100.0)
SHOWN = ("miou", "boundary_iou", "mba")  # the table's and plot's default metrics
MIN_INSTANCES = 5  # a stratum with fewer instances is flagged in tables and plots, not read as a result

Table = Mapping[str, np.ndarray]  # "inter", "union", "b_inter", "b_union", "ba" [N, C] float64; "has_ba" bool


def iou_percent(inter, union):
    """THE IoU: 100 * I / U (scalars or arrays; callers keep union > 0)."""
    return 100.0 * inter / union


def class_iou(counts: SourceCounts, c: int) -> float | None:
    """IoU (percent) of class c in one image, None where the class is in neither map."""
    union = counts.union.get(c, 0)
    return iou_percent(counts.inter.get(c, 0), union) if union else None


def instance_ious(baseline: SourceCounts) -> dict[int, float]:
    """Initial IoU (percent) of each (image, foreground class) instance of the coarse mask:
    classes in the GT or in the coarse mask. What the strata are made of."""
    return {c: v for c in baseline.union if c != 0 and (v := class_iou(baseline, c)) is not None}


def stratum_of(iou: float, edges: Sequence[float]) -> int:
    """Index of the stratum [edges[i], edges[i+1]) holding iou; the last one includes its top."""
    for i in range(len(edges) - 1):
        if edges[i] <= iou < edges[i + 1] or (i == len(edges) - 2 and iou == edges[-1]):
            return i
    return -1


def check_edges(edges: Sequence[float], key: str = "model.strata_edges") -> list[float]:
    from ..errors import ConfigError

    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or not all(0.0 <= e <= 100.0 for e in edges):
        raise ConfigError(f"strata edges ({key}) must be increasing, at least two, initial IoUs in percent each "
                          f"in [0, 100]; got {edges}")  # fmt: skip
    return edges


def _ratio_mean(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """[R] percent: mean over units (last axis) with den > 0 of num / den; NaN where none."""
    seen = den > 0
    ratio = np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=seen)
    n = seen.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 100.0 * ratio.sum(-1) / n, np.nan)


def miou(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _ratio_mean(w @ (t["inter"] * mask), w @ (t["union"] * mask))


def boundary_iou(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _ratio_mean(w @ (t["b_inter"] * mask), w @ (t["b_union"] * mask))


def mba(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    m = t["has_ba"] & mask
    return _ratio_mean((w @ (t["ba"] * m).sum(1))[:, None], (w @ m.sum(1, dtype=np.float64))[:, None])


def miou_image(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    seen = (t["union"] > 0) & mask
    iou = np.divide(t["inter"], t["union"], out=np.zeros_like(t["inter"]), where=seen)
    k = seen.sum(1)
    per_image = np.divide(iou.sum(1), k, out=np.zeros(len(k)), where=k > 0)
    return _ratio_mean((w @ per_image)[:, None], (w @ (k > 0).astype(np.float64))[:, None])


def pixel_accuracy(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Correct pixels over scored GT pixels (of the section's classes)."""
    return _ratio_mean((w @ (t["inter"] * mask).sum(1))[:, None], (w @ (t["gt"] * mask).sum(1))[:, None])


def mean_accuracy(t: Table, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per class, correct pixels over its GT pixels (summed over images); mean over classes."""
    return _ratio_mean(w @ (t["inter"] * mask), w @ (t["gt"] * mask))


METRIC_FUNCTIONS: dict[str, Callable[[Table, np.ndarray, np.ndarray], np.ndarray]] = {
    "miou": miou, "boundary_iou": boundary_iou, "mba": mba, "miou_image": miou_image,
    "pixel_accuracy": pixel_accuracy, "macc": mean_accuracy,
}  # fmt: skip
METRICS = tuple(METRIC_FUNCTIONS)
TITLES = {"miou": "mIoU", "boundary_iou": "Boundary IoU", "mba": "mBA", "miou_image": "per-image mIoU",
          "pixel_accuracy": "pixel accuracy", "macc": "mAcc"}  # fmt: skip


def image_gains(base: Table, ref: Table, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: refined minus coarse mIoU (percent) over the section's classes that occur
    in the coarse mask or the GT, and whether the image has any such class."""
    classes = (base["union"] > 0) & mask
    k = classes.sum(1)

    def mean_iou(t: Table) -> np.ndarray:
        seen = (t["union"] > 0) & classes
        iou = np.divide(t["inter"], t["union"], out=np.zeros_like(t["inter"]), where=seen)
        n = seen.sum(1)
        return 100.0 * np.divide(iou.sum(1), n, out=np.zeros(len(n)), where=n > 0)

    return mean_iou(ref) - mean_iou(base), k > 0


def metric_keys(metric: str) -> tuple[str, str, str, str]:
    """metrics.json keys of (baseline, refined, gain, ci95); mIoU keeps its original names."""
    if metric == "miou":
        return "miou_baseline", "miou_refined", "gain", "ci95"
    return f"{metric}_baseline", f"{metric}_refined", f"{metric}_gain", f"{metric}_ci95"


def per_class(t: Table, inter: str = "inter", union: str = "union") -> list[float | None]:
    """Dataset IoU (percent) of every class, None for a class in no image."""
    i, u = t[inter].sum(0), t[union].sum(0)
    return [float(iou_percent(a, b)) if b else None for a, b in zip(i, u)]
