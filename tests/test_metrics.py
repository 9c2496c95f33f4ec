"""The stratified metric against a plain NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g4seg.errors import ConfigError
from g4seg.evaluation.counts import pixel_counts
from g4seg.evaluation.metrics import stratum_of
from g4seg.evaluation.summary import summarize
from g4seg.types import BASELINE, SampleResult

N = 6
EDGES = [0, 40, 80, 100]


def reference(preds, gts, strata_pred=None):
    """Dataset mIoU from a confusion matrix; strata per (image, class) from baseline IoU."""
    conf = np.zeros((N, N), np.int64)
    for p, g in zip(preds, gts):
        v = g != 255
        np.add.at(conf, (g[v], p[v]), 1)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    seen = union > 0
    miou = 100 * np.mean(inter[seen] / union[seen])
    strata = None
    if strata_pred is not None:
        si, su, cnt = np.zeros((3, N)), np.zeros((3, N)), np.zeros(3, int)
        for p, g, b in zip(preds, gts, strata_pred):
            v = g != 255
            for c in range(1, N):
                bu = ((b == c) | (g == c))[v].sum()
                if bu == 0:
                    continue
                iou = 100 * ((b == c) & (g == c))[v].sum() / bu
                s = min(int(np.searchsorted(EDGES, iou, side="right")) - 1, 2)
                si[s, c] += ((p == c) & (g == c))[v].sum()
                su[s, c] += ((p == c) | (g == c))[v].sum()
                cnt[s] += 1
        strata = [(cnt[s], 100 * np.mean(si[s][su[s] > 0] / su[s][su[s] > 0]) if (su[s] > 0).any() else np.nan)
                  for s in range(3)]
    return miou, strata


def random_maps(rng, n=12, h=23, w=31):
    gts, bases, refs = [], [], []
    for _ in range(n):
        g = rng.integers(0, N, (h, w))
        g[rng.random((h, w)) < 0.1] = 255
        # baseline: GT with a varying fraction of labels scrambled, so instances spread over strata
        b = np.where(rng.random((h, w)) < [0.03, 0.5, 0.95][len(gts) % 3], rng.integers(0, N, (h, w)), g)
        b[b == 255] = 0
        r = np.where(rng.random((h, w)) < 0.2, rng.integers(0, N, (h, w)), b)
        gts.append(g), bases.append(b), refs.append(r)
    return gts, bases, refs


def test_metric_matches_numpy_reference():
    rng = np.random.default_rng(0)
    gts, bases, refs = random_maps(rng)
    results = []
    for i, (g, b, r) in enumerate(zip(gts, bases, refs)):
        g, b, r = map(torch.from_numpy, (g, b, r))
        results.append(SampleResult(str(i), {}, {BASELINE: pixel_counts(b, g, N), "s": pixel_counts(r, g, N)}))
    out = summarize(results, ["s"], [str(c) for c in range(N)], EDGES, resamples=0)["strategies"]["s"]
    base_ref, base_strata = reference(bases, gts, bases)
    ref_ref, ref_strata = reference(refs, gts, bases)
    assert out["miou_baseline"] == pytest.approx(base_ref, abs=1e-9)
    assert out["miou_refined"] == pytest.approx(ref_ref, abs=1e-9)
    assert sum(s["count"] for s in out["strata"]) == sum(c for c, _ in base_strata)
    assert min(s["count"] for s in out["strata"]) > 0, "random maps should populate every stratum"
    for got, (cnt, b), (_, r) in zip(out["strata"], base_strata, ref_strata):
        assert got["count"] == cnt
        assert got["miou_baseline"] == pytest.approx(b, abs=1e-9)
        assert got["miou_refined"] == pytest.approx(r, abs=1e-9)


def test_ignore_pixels_never_count():
    g = torch.tensor([[1, 255], [0, 255]])
    p1 = torch.tensor([[1, 1], [0, 0]])
    p2 = torch.tensor([[1, 0], [0, 1]])
    assert pixel_counts(p1, g, 3) == pixel_counts(p2, g, 3)


def test_stratum_edges():
    assert stratum_of(0.0, EDGES) == 0
    assert stratum_of(39.999, EDGES) == 0
    assert stratum_of(40.0, EDGES) == 1
    assert stratum_of(80.0, EDGES) == 2
    assert stratum_of(100.0, EDGES) == 2
    with pytest.raises(ConfigError, match="must be increasing"):
        summarize([], ["s"], ["a", "b", "c"], [0, 50, 50, 100])
