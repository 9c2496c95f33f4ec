"""Dataset metrics, overall and per stratum of the coarse mask's initial quality: mIoU
(sum I / sum U per class), per-image mIoU, Boundary IoU and mBA (`boundary.py`).

States are integer sums (`add_state(..., dist_reduce_fx="sum")`): pixel counts, and the
two float averages (boundary accuracy per instance, mIoU per image) as int64 fixed point in
units of 1e-12. DDP reduction is exact and order-free, and feeding the per-sample counts
stored in records gives bit-identical numbers, which is what makes resume and `g4seg
report` trustworthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchmetrics import Metric

from .boundary import GroundTruthBoundaries
from .errors import ConfigError
from .types import BASELINE, IGNORE_INDEX, SampleResult, SourceCounts

DEFAULT_EDGES = (0.0, 40.0, 80.0, 100.0)
FIXED = 10**12
METRICS = ("miou", "boundary_iou", "mba", "miou_image")
SHOWN = ("miou", "boundary_iou", "mba")  # the table's and plot's default metrics
TITLES = {"miou": "mIoU", "boundary_iou": "Boundary IoU", "mba": "mBA", "miou_image": "per-image mIoU"}


def metric_keys(metric: str) -> tuple[str, str, str, str]:
    """metrics.json keys of (baseline, refined, gain, ci95); mIoU keeps its original names."""
    if metric == "miou":
        return "miou_baseline", "miou_refined", "gain", "ci95"
    return f"{metric}_baseline", f"{metric}_refined", f"{metric}_gain", f"{metric}_ci95"


def pixel_counts(
    pred: torch.Tensor, gt: torch.Tensor, num_classes: int, boundaries: GroundTruthBoundaries | None = None
) -> SourceCounts:
    """Per-class intersection and union over the scored pixels of one image, and with
    `boundaries` (the GT side, shared by the sources of a sample) the boundary counts."""
    valid = gt != IGNORE_INDEX
    p, g = pred[valid].long(), gt[valid].long()
    if p.numel() and (int(p.max()) >= num_classes or int(p.min()) < 0):
        raise ValueError(f"prediction holds labels outside 0..{num_classes - 1}")
    inter = torch.bincount(p[p == g], minlength=num_classes)
    union = torch.bincount(p, minlength=num_classes) + torch.bincount(g, minlength=num_classes) - inter
    present = torch.nonzero(union).flatten().tolist()
    counts = SourceCounts({c: int(inter[c]) for c in present}, {c: int(union[c]) for c in present})
    if boundaries is not None:
        pred_np = pred.numpy()
        counts.b_inter, counts.b_union = boundaries.boundary_counts(pred_np, present)
        counts.ba = boundaries.boundary_accuracy(pred_np, present)
    return counts


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


def image_miou(counts: SourceCounts, classes) -> float | None:
    """mIoU (fraction) of one image over `classes` that occur in it, None when none does."""
    ious = [iou for c in classes if (iou := counts.iou(c)) is not None]
    return sum(ious) / len(ious) if ious else None


def fixed_mean(total: torch.Tensor, count: torch.Tensor) -> float:
    return float(total) / FIXED / int(count) * 100.0 if int(count) else float("nan")


class StratifiedIoU(Metric):
    """The metrics of one label source (baseline or a strategy), overall and per initial-IoU
    stratum. Index S (the last) of the per-stratum float sums is "all"."""

    full_state_update = False

    def __init__(self, num_classes: int, edges: Sequence[float] = DEFAULT_EDGES, **kwargs) -> None:
        super().__init__(**kwargs)
        edges = [float(e) for e in edges]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"strata edges (model.strata_edges) must be increasing, at least two, got {edges}")
        self.num_classes, self.edges = num_classes, edges
        s = len(edges) - 1
        for name in ("inter", "union", "b_inter", "b_union"):
            self.add_state(name, torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state(f"strata_{name}", torch.zeros(s, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("strata_count", torch.zeros(s, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("ba_sum", "ba_count", "img_sum", "img_count"):
            self.add_state(name, torch.zeros(s + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, counts: SourceCounts, initial_iou: Mapping[int, float]) -> None:
        S = len(self.edges) - 1
        for name in ("inter", "union", "b_inter", "b_union"):
            state = getattr(self, name)
            for c, n in getattr(counts, name).items():
                state[c] += n
        in_stratum: dict[int, list[int]] = {}
        for c, iou in initial_iou.items():
            s = stratum_of(iou, self.edges)
            if s >= 0:
                in_stratum.setdefault(s, []).append(c)
                for name in ("inter", "union", "b_inter", "b_union"):
                    getattr(self, f"strata_{name}")[s, c] += getattr(counts, name).get(c, 0)
                self.strata_count[s] += 1
        for c, acc in counts.ba.items():
            s = stratum_of(initial_iou[c], self.edges) if c in initial_iou else -1
            for index in (S, s) if s >= 0 else (S,):
                self.ba_sum[index] += int(round(acc * FIXED))
                self.ba_count[index] += 1
        for index, classes in [(S, list(counts.union)), *in_stratum.items()]:
            value = image_miou(counts, classes)
            if value is not None:
                self.img_sum[index] += int(round(value * FIXED))
                self.img_count[index] += 1

    def compute(self) -> dict:
        S = len(self.edges) - 1
        return {
            "miou": mean_iou(self.inter, self.union),
            "boundary_iou": mean_iou(self.b_inter, self.b_union),
            "mba": fixed_mean(self.ba_sum[S], self.ba_count[S]),
            "miou_image": fixed_mean(self.img_sum[S], self.img_count[S]),
            "per_class": [float(i) / float(u) * 100.0 if u else None for i, u in zip(self.inter, self.union)],
            "per_class_boundary": [float(i) / float(u) * 100.0 if u else None for i, u in zip(self.b_inter, self.b_union)],
            "strata": [
                {
                    "low": self.edges[s],
                    "high": self.edges[s + 1],
                    "count": int(self.strata_count[s]),
                    "miou": mean_iou(self.strata_inter[s], self.strata_union[s]),
                    "boundary_iou": mean_iou(self.strata_b_inter[s], self.strata_b_union[s]),
                    "mba": fixed_mean(self.ba_sum[s], self.ba_count[s]),
                    "miou_image": fixed_mean(self.img_sum[s], self.img_count[s]),
                }
                for s in range(S)
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
            entry = {**compare(base, ref), "strata": []}
            for b, r in zip(base["strata"], ref["strata"]):
                entry["strata"].append({"low": b["low"], "high": b["high"], "count": b["count"], **compare(b, r)})
            if class_names is not None:
                entry["per_class"] = {
                    class_names[c]: {"iou_baseline": b, "iou_refined": r,
                                     "boundary_iou_baseline": base["per_class_boundary"][c],
                                     "boundary_iou_refined": ref["per_class_boundary"][c]}  # fmt: skip
                    for c, (b, r) in enumerate(zip(base["per_class"], ref["per_class"]))
                    if b is not None
                }
            out["strategies"][name] = entry
        return out


def compare(base: dict, ref: dict) -> dict:
    """Baseline, refined and gain of every metric, under their metrics.json keys."""
    out = {}
    for metric in METRICS:
        kb, kr, kg, _ = metric_keys(metric)
        out[kb], out[kr], out[kg] = base[metric], ref[metric], ref[metric] - base[metric]
    return out
