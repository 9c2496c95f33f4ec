"""The metrics.json document of a run, from its per-sample results alone.

Point estimates (unit weights) and bootstrap intervals (resample weights) come from the
same metric functions over the same count tables; notes, random-weight flags and sample
counts are gathered from the same results. The live run and `g4seg report` both call
`summarize`, so a report made later from the records matches the run's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import BASELINE, SampleResult
from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, percentile_interval, resample_weights
from .metrics import METRIC_FUNCTIONS, METRICS, check_edges, image_gains, metric_keys, per_class
from .tables import CountTables


def summarize(results: Sequence[SampleResult], strategies: Sequence[str], class_names: Sequence[str],
              edges: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict:  # fmt: skip
    edges = check_edges(edges)
    tables = CountTables.build(results, [BASELINE, *strategies], len(class_names))
    masks = tables.masks(edges)
    unit = np.ones((1, tables.n))
    weights = resample_weights(tables.n, resamples, seed) if tables.n and resamples > 0 else None
    base = tables.sources[BASELINE]
    document: dict = {"strategies": {}, "num_samples": len(results), "num_unscored": len(results) - tables.n}
    for name in strategies:
        ref = tables.sources[name]
        sections = [{} for _ in masks]
        for metric in METRICS:
            f = METRIC_FUNCTIONS[metric]
            kb, kr, kg, kc = metric_keys(metric)
            for section, mask in zip(sections, masks):
                b, r = float(f(base, mask, unit)[0]), float(f(ref, mask, unit)[0])
                section.update({kb: b, kr: r, kg: r - b})
                if weights is not None:
                    section[kc] = percentile_interval(f(ref, mask, weights) - f(base, mask, weights))
        for section, mask in zip(sections, masks):
            gains, valid = image_gains(base, ref, mask)
            g = gains[valid]
            section["images"] = {"wins": int((g > 0).sum()), "ties": int((g == 0).sum()), "losses": int((g < 0).sum())}
        entry = sections[0]
        entry["strata"] = [{"low": lo, "high": hi, "count": int(mask.sum()), **section}
                           for lo, hi, mask, section in zip(edges, edges[1:], masks[1:], sections[1:])]  # fmt: skip
        pb, pr = per_class(base), per_class(ref)
        bb, br = per_class(base, "b_inter", "b_union"), per_class(ref, "b_inter", "b_union")
        entry["per_class"] = {
            class_names[c]: {"iou_baseline": pb[c], "iou_refined": pr[c],
                             "boundary_iou_baseline": bb[c], "boundary_iou_refined": br[c]}  # fmt: skip
            for c in range(len(class_names)) if pb[c] is not None
        }
        document["strategies"][name] = entry
    if weights is not None:
        document["bootstrap"] = {"resamples": resamples, "seed": seed, "level": 0.95}
    random = sorted({name for r in results for name in r.random_weights})
    if random:
        document["random_weights"] = random
    notes: dict[str, dict[str, int]] = {}
    for r in results:
        for name, texts in r.notes.items():
            for text in texts:
                notes.setdefault(name, {}).setdefault(text, 0)
                notes[name][text] += 1
    if notes:
        document["notes"] = {name: dict(sorted(n.items())) for name, n in sorted(notes.items())}
    return document


def mean_seconds(results: Sequence[SampleResult]) -> dict[str, float]:
    """Mean wall time per scored sample and strategy (generation included)."""
    sums: dict[str, list[float]] = {}
    for r in results:
        for name, s in r.seconds.items():
            sums.setdefault(name, []).append(s)
    return {k: sum(v) / len(v) for k, v in sums.items()}
