"""Paired bootstrap confidence intervals for every gain, from the per-sample results
(as stored in the records).

The paper's gains are a fraction of a point; whether a gain is more than the luck of which
images are in the set is answered by resampling images with replacement and recomputing
each metric *the same way as the point estimate* (sum-I / sum-U per class for mIoU and
Boundary IoU, mean over instances for mBA, mean over images for per-image mIoU) from the
per-image counts. Paired: one resample of images serves the baseline and every strategy,
so the interval is of the difference, not of two noisy levels.

Every metric here is "mean over units k of sum_i num[i, k] / sum_i den[i, k]" (units =
classes, or one unit for the two averages), so a resample with multiplicities W [R, N] is
two matrix products: vectorised over resamples, 1,449 images x 1,000 resamples in well
under a second per metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import METRICS, stratum_of
from .types import BASELINE, SampleResult

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def _value(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """[R] percent: mean over units with den > 0 of num / den; NaN where no unit occurs."""
    seen = den > 0
    ratio = np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=seen)
    n = seen.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, ratio.sum(-1) / n, np.nan) * 100.0


class Tables:
    """Per-image numerators and denominators of every metric, per source and stratum."""

    def __init__(self, results: Sequence[SampleResult], sources: Sequence[str], num_classes: int, edges: Sequence[float]):
        scored = [r for r in results if r.unscored_reason is None]
        self.n = len(scored)
        n, c = self.n, num_classes
        strata = np.full((n, c), -1, dtype=np.int64)
        for i, r in enumerate(scored):
            for k, iou in r.initial_iou.items():
                strata[i, k] = stratum_of(iou, edges)
        self.masks = [np.ones((n, c), bool)] + [strata == s for s in range(len(edges) - 1)]
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        for source in sources:
            a = {key: np.zeros((n, c)) for key in ("inter", "union", "b_inter", "b_union", "ba")}
            has_ba = np.zeros((n, c), bool)
            for i, r in enumerate(scored):
                counts = r.counts[source]
                for key in a:
                    for k, v in getattr(counts, key).items():
                        a[key][i, k] = v
                has_ba[i, list(counts.ba)] = True
            a["has_ba"] = has_ba
            self.arrays[source] = a

    def table(self, source: str, metric: str, stratum: int) -> tuple[np.ndarray, np.ndarray]:
        """(num, den), [N, units]; stratum 0 = all, s + 1 = stratum s."""
        a, mask = self.arrays[source], self.masks[stratum]
        if metric == "miou":
            return a["inter"] * mask, a["union"] * mask
        if metric == "boundary_iou":
            return a["b_inter"] * mask, a["b_union"] * mask
        if metric == "mba":
            m = a["has_ba"] & mask
            return (a["ba"] * m).sum(1, keepdims=True), m.sum(1, keepdims=True).astype(np.float64)
        # per-image mIoU: each image's mean IoU over its classes (in the stratum) is one unit value
        seen = (a["union"] > 0) & mask
        iou = np.divide(a["inter"], a["union"], out=np.zeros_like(a["inter"]), where=seen)
        k = seen.sum(1, keepdims=True)
        return np.divide(iou.sum(1, keepdims=True), k, out=np.zeros((self.n, 1)), where=k > 0), (k > 0).astype(np.float64)

    def point(self, source: str, metric: str, stratum: int) -> float:
        num, den = self.table(source, metric, stratum)
        return float(_value(num.sum(0), den.sum(0)))


def confidence_intervals(
    results: Sequence[SampleResult],
    strategies: Sequence[str],
    num_classes: int,
    edges: Sequence[float],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, list]]:
    """{strategy: {metric: [ci of all, ci of stratum 0, ...]}}, each ci [lo, hi] in points
    (2.5th and 97.5th percentile of the resampled gains) or None where the stratum is empty."""
    tables = Tables(results, [BASELINE, *strategies], num_classes, edges)
    if tables.n == 0 or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(tables.n, np.full(tables.n, 1.0 / tables.n), size=resamples).astype(np.float64)
    out: dict[str, dict[str, list]] = {name: {} for name in strategies}
    for metric in metrics:
        for stratum in range(len(edges)):
            num, den = tables.table(BASELINE, metric, stratum)
            base = _value(weights @ num, weights @ den)
            for name in strategies:
                num, den = tables.table(name, metric, stratum)
                gains = _value(weights @ num, weights @ den) - base
                finite = gains[np.isfinite(gains)]
                ci = [float(x) for x in np.percentile(finite, [2.5, 97.5])] if finite.size else None
                out[name].setdefault(metric, []).append(ci)
    return out
