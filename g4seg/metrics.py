"""Dataset mIoU, overall and per stratum of the coarse mask's initial quality.

States are integer pixel sums (`add_state(..., dist_reduce_fx="sum")`): DDP reduction is
exact and free, and feeding the per-sample counts stored in records gives bit-identical
numbers, which is what makes resume and `g4seg report` trustworthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchmetrics import Metric

from .errors import ConfigError
from .types import BASELINE, IGNORE_INDEX, SampleResult, SourceCounts

DEFAULT_EDGES = (0.0, 40.0, 80.0, 100.0)


def pixel_counts(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> SourceCounts:
    """Per-class intersection and union over the scored pixels of one image."""
    valid = gt != IGNORE_INDEX
    p, g = pred[valid].long(), gt[valid].long()
    if p.numel() and (int(p.max()) >= num_classes or int(p.min()) < 0):
        raise ValueError(f"prediction holds labels outside 0..{num_classes - 1}")
    inter = torch.bincount(p[p == g], minlength=num_classes)
    union = torch.bincount(p, minlength=num_classes) + torch.bincount(g, minlength=num_classes) - inter
    present = torch.nonzero(union).flatten().tolist()
    return SourceCounts({c: int(inter[c]) for c in present}, {c: int(union[c]) for c in present})


def initial_ious(coarse_counts: SourceCounts) -> dict[int, float]:
    """IoU (percent) of each foreground (image, class) instance: classes in the GT or the coarse mask."""
    return {c: 100.0 * coarse_counts.inter.get(c, 0) / u for c, u in coarse_counts.union.items() if c != 0 and u > 0}


def stratum_of(iou: float, edges: Sequence[float]) -> int:
    """Index of the stratum [edges[i], edges[i+1]) holding iou; the last one includes its top."""
    for i in range(len(edges) - 1):
        if edges[i] <= iou < edges[i + 1] or (i == len(edges) - 2 and iou == edges[-1]):
            return i
    return -1


def mean_iou(inter: torch.Tensor, union: torch.Tensor) -> float:
    """Percent; averaged over the classes that occur (union > 0), NaN when none does."""
    seen = union > 0
    if not bool(seen.any()):
        return float("nan")
    return float((inter[seen].double() / union[seen].double()).mean() * 100.0)


class StratifiedIoU(Metric):
    """mIoU of one label source (baseline or a strategy), overall and per initial-IoU stratum."""

    full_state_update = False

    def __init__(self, num_classes: int, edges: Sequence[float] = DEFAULT_EDGES, **kwargs) -> None:
        super().__init__(**kwargs)
        edges = [float(e) for e in edges]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"strata edges (model.strata_edges) must be increasing, at least two, got {edges}")
        self.num_classes, self.edges = num_classes, edges
        s = len(edges) - 1
        self.add_state("inter", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("strata_inter", torch.zeros(s, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("strata_union", torch.zeros(s, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("strata_count", torch.zeros(s, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, counts: SourceCounts, initial_iou: Mapping[int, float]) -> None:
        for c, n in counts.inter.items():
            self.inter[c] += n
        for c, n in counts.union.items():
            self.union[c] += n
        for c, iou in initial_iou.items():
            s = stratum_of(iou, self.edges)
            if s >= 0:
                self.strata_inter[s, c] += counts.inter.get(c, 0)
                self.strata_union[s, c] += counts.union.get(c, 0)
                self.strata_count[s] += 1

    def compute(self) -> dict:
        return {
            "miou": mean_iou(self.inter, self.union),
            "per_class": [float(i) / float(u) * 100.0 if u else None for i, u in zip(self.inter, self.union)],
            "strata": [
                {
                    "low": self.edges[s],
                    "high": self.edges[s + 1],
                    "count": int(self.strata_count[s]),
                    "miou": mean_iou(self.strata_inter[s], self.strata_union[s]),
                }
                for s in range(len(self.edges) - 1)
            ],
        }


class SampleCountMetric(Metric):
    """How many samples were scored and how many were skipped (GT all ignore)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("scored", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, skipped: bool) -> None:
        if skipped:
            self.skipped += 1
        else:
            self.scored += 1

    def compute(self) -> dict:
        return {"num_samples": int(self.scored + self.skipped), "num_unscored": int(self.skipped)}


class StrategyMetrics(nn.Module):
    """One StratifiedIoU per label source, fed with SampleResults or with stored records."""

    def __init__(self, strategies: Sequence[str], num_classes: int, edges: Sequence[float] = DEFAULT_EDGES) -> None:
        super().__init__()
        self.strategies = list(strategies)
        self.sources = nn.ModuleDict(
            {name: StratifiedIoU(num_classes, edges) for name in [BASELINE, *self.strategies]}
        )
        self.samples = SampleCountMetric()

    def update(self, result: SampleResult) -> None:
        self.samples.update(result.unscored_reason is not None)
        if result.unscored_reason is not None:
            return
        for name, metric in self.sources.items():
            metric.update(result.counts[name], result.initial_iou)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """The metrics.json document."""
        base = self.sources[BASELINE].compute()
        out: dict = {"strategies": {}, **self.samples.compute()}
        for name in self.strategies:
            ref = self.sources[name].compute()
            strata = [
                {
                    "low": b["low"],
                    "high": b["high"],
                    "count": b["count"],
                    "miou_baseline": b["miou"],
                    "miou_refined": r["miou"],
                    "gain": r["miou"] - b["miou"],
                }
                for b, r in zip(base["strata"], ref["strata"])
            ]
            entry = {
                "miou_baseline": base["miou"],
                "miou_refined": ref["miou"],
                "gain": ref["miou"] - base["miou"],
                "strata": strata,
            }
            if class_names is not None:
                entry["per_class"] = {
                    class_names[c]: {"iou_baseline": b, "iou_refined": r}
                    for c, (b, r) in enumerate(zip(base["per_class"], ref["per_class"]))
                    if b is not None
                }
            out["strategies"][name] = entry
        return out
