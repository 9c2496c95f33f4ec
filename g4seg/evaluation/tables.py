"""Per-image count tables: the records of a run as [N images, C classes] arrays, per
source, with each instance's stratum. Built once per report from the SampleResults; every
metric, point estimate and bootstrap alike, reads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..types import BASELINE, SampleResult
from .metrics import instance_ious, stratum_of
from .records import COUNT_KEYS


@dataclass
class CountTables:
    ids: list[str]  # the scored samples, in order
    sources: dict[str, dict[str, np.ndarray]]  # source -> count key (+ "has_ba") -> [N, C]
    initial: np.ndarray  # [N, C] initial IoU (percent) of each instance, NaN where none

    @classmethod
    def build(cls, results: Sequence[SampleResult], sources: Sequence[str], num_classes: int) -> CountTables:
        scored = [r for r in results if r.unscored_reason is None]
        n, c = len(scored), num_classes
        initial = np.full((n, c), np.nan)
        for i, r in enumerate(scored):
            for k, iou in instance_ious(r.counts[BASELINE]).items():
                initial[i, k] = iou
        tables: dict[str, dict[str, np.ndarray]] = {}
        for source in sources:
            t = {key: np.zeros((n, c)) for key in COUNT_KEYS}
            t["has_ba"] = np.zeros((n, c), bool)
            for i, r in enumerate(scored):
                counts = r.counts[source]
                for key in COUNT_KEYS:
                    for k, v in getattr(counts, key).items():
                        t[key][i, k] = v
                t["has_ba"][i, list(counts.ba)] = True
            tables[source] = t
        return cls([r.id for r in scored], tables, initial)

    @property
    def n(self) -> int:
        return len(self.ids)

    def masks(self, edges: Sequence[float]) -> list[np.ndarray]:
        """[N, C] bool per section: all entries first, then each stratum's instances."""
        strata = np.full(self.initial.shape, -1, dtype=np.int64)
        for i, k in zip(*np.nonzero(~np.isnan(self.initial))):
            strata[i, k] = stratum_of(float(self.initial[i, k]), edges)
        return [np.ones(self.initial.shape, bool)] + [strata == s for s in range(len(edges) - 1)]
