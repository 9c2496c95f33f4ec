"""Per-sample counts: what each label map of a sample contributes to every metric.

Exact integers (pixel counts) and one float per boundary-accuracy instance, so that sums
over samples, in any order, on any number of processes, after any resume, give the same
numbers. The module computes them once per sample and source; records store them; every
metric is a function of them (`metrics.py`).
"""

from __future__ import annotations

import torch

from ..types import IGNORE_INDEX, SourceCounts
from .boundary import GroundTruthBoundaries


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
    in_gt = torch.bincount(g, minlength=num_classes)
    union = torch.bincount(p, minlength=num_classes) + in_gt - inter
    present = torch.nonzero(union).flatten().tolist()
    counts = SourceCounts({c: int(inter[c]) for c in present}, {c: int(union[c]) for c in present},
                          gt={c: int(in_gt[c]) for c in present if int(in_gt[c])})  # fmt: skip
    if boundaries is not None:
        pred_np = pred.numpy()
        counts.b_inter, counts.b_union = boundaries.boundary_counts(pred_np, present)
        counts.ba = boundaries.boundary_accuracy(pred_np, present)
    return counts
