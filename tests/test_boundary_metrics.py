"""Boundary IoU, mBA, per-image mIoU and the bootstrap against references written here from
the two papers' code (boundary-iou-api `mask_to_boundary`, CascadePSP
`compute_boundary_acc`), on the real sample masks, degraded, and on hand-made cases."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import finished_run, read_metrics
from g4seg.evaluation.boundary import GroundTruthBoundaries, mask_boundary
from g4seg.evaluation.counts import pixel_counts
from g4seg.evaluation.records import from_record, to_record
from g4seg.evaluation.summary import summarize
from g4seg.types import BASELINE, SampleResult

C = 21


# -- references, from the definitions -------------------------------------------------------
def ref_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """boundary-iou-api's mask_to_boundary."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    erode = cv2.erode(new_mask, np.ones((3, 3), np.uint8), iterations=dilation)[1 : h + 1, 1 : w + 1]
    return mask - erode


def ref_boundary_iou(preds, gts) -> tuple[float, dict[int, float]]:
    inter, union = np.zeros(C), np.zeros(C)
    for p, g in zip(preds, gts):
        valid = g != 255
        for c in range(C):
            if not ((p == c) | (g == c))[valid].any():
                continue
            gd = ref_boundary((g == c).astype(np.uint8)).astype(bool)
            pd = ref_boundary((p == c).astype(np.uint8)).astype(bool)
            inter[c] += (gd & pd & valid).sum()
            union[c] += ((gd | pd) & valid).sum()
    seen = union > 0
    return 100 * float(np.mean(inter[seen] / union[seen])), {c: inter[c] / union[c] for c in np.flatnonzero(seen)}


def ref_boundary_acc(gt: np.ndarray, seg: np.ndarray, valid: np.ndarray) -> float:
    """CascadePSP's compute_boundary_acc for one binary mask; the band's unscored pixels left out."""
    h, w = gt.shape
    max_radius, steps, accs = (w + h) / 300, 5, []
    for i in range(steps):
        r = 1 + int((max_radius - 1) / steps * i)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (r * 2 + 1, r * 2 + 1))
        region = (cv2.morphologyEx(gt, cv2.MORPH_GRADIENT, kernel) > 0) & valid
        gt_in, seg_in = gt[region].astype(np.int64), seg[region].astype(np.int64)
        accs.append((gt_in * seg_in + (1 - gt_in) * (1 - seg_in)).sum() / region.sum())
    return sum(accs) / steps


def ref_mba(preds, gts) -> float:
    accs = []
    for p, g in zip(preds, gts):
        valid = g != 255
        for c in np.unique(g[valid]):
            if c != 0:
                accs.append(ref_boundary_acc((g == c).astype(np.uint8), (p == c).astype(np.uint8), valid))
    return 100 * float(np.mean(accs))


def ref_image_miou(preds, gts) -> float:
    per_image = []
    for p, g in zip(preds, gts):
        valid = g != 255
        ious = [((p == c) & (g == c))[valid].sum() / u for c in range(C) if (u := ((p == c) | (g == c))[valid].sum())]
        per_image.append(np.mean(ious))
    return 100 * float(np.mean(per_image))


# -- the real sample masks, degraded ----------------------------------------------------------
def degrade(gt: np.ndarray, seed: int) -> np.ndarray:
    """Each class dilated or eroded and shifted; ignore pixels get a label like a segmenter's."""
    rng = np.random.default_rng(seed)
    out = np.where(gt == 255, 0, gt).astype(np.uint8)
    for c in np.unique(gt):
        if c in (0, 255):
            continue
        m = (gt == c).astype(np.uint8)
        k = np.ones((int(rng.integers(3, 15)),) * 2, np.uint8)
        m = cv2.dilate(m, k) if rng.random() < 0.5 else cv2.erode(m, k)
        m = np.roll(m, tuple(int(x) for x in rng.integers(-6, 7, 2)), axis=(0, 1))
        out[(out == c)] = 0
        out[m > 0] = c
    return out


@pytest.fixture(scope="module")
def real_pairs(real_voc):
    gts = [np.asarray(Image.open(p), dtype=np.uint8) for p in sorted((real_voc / "SegmentationClass").glob("*.png"))]
    return gts, [degrade(g, i) for i, g in enumerate(gts)]


NAMES = [str(c) for c in range(C)]


def baseline_metrics(preds, gts) -> dict:
    """The run's metrics of `preds` (as the baseline), through `summarize` as a run computes them."""
    results = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        b = GroundTruthBoundaries(g)
        gt = torch.from_numpy(g.astype(np.int64))
        counts = pixel_counts(torch.from_numpy(p.astype(np.int64)), gt, C, b)
        results.append(SampleResult(str(i), {}, {BASELINE: counts, "s": counts}))
    entry = summarize(results, ["s"], NAMES, [0, 40, 80, 100], resamples=0)["strategies"]["s"]
    per = entry["per_class"]
    return {"miou": entry["miou_baseline"], **{m: entry[f"{m}_baseline"] for m in ("boundary_iou", "mba", "miou_image")},
            "per_class": {int(n): v["iou_baseline"] for n, v in per.items()},
            "per_class_boundary": {int(n): v["boundary_iou_baseline"] for n, v in per.items()}}  # fmt: skip


def test_boundary_iou_mba_and_image_miou_equal_the_references_on_real_masks(real_pairs):
    gts, preds = real_pairs
    assert any((g == 255).any() for g in gts)  # VOC's ignore outlines are part of the case
    m = baseline_metrics(preds, gts)
    biou, per_class = ref_boundary_iou(preds, gts)
    assert m["boundary_iou"] == pytest.approx(biou, abs=1e-9)
    for c, v in per_class.items():
        assert m["per_class_boundary"][c] == pytest.approx(100 * v, abs=1e-9)
    assert m["mba"] == pytest.approx(ref_mba(preds, gts), abs=1e-9)
    assert m["miou_image"] == pytest.approx(ref_image_miou(preds, gts), abs=1e-9)


def test_mba_equals_cascadepsp_formula_without_ignore(real_pairs):
    """No ignore pixels: the band is CascadePSP's, untouched."""
    gts = [np.where(g == 255, 0, g).astype(np.uint8) for g in real_pairs[0]]
    preds = real_pairs[1]
    m = baseline_metrics(preds, gts)
    assert m["mba"] == pytest.approx(ref_mba(preds, gts), abs=1e-9)


# -- hand-made cases ---------------------------------------------------------------------------
def square(top, left, size=10, h=20, w=20):
    m = np.zeros((h, w), np.uint8)
    m[top : top + size, left : left + size] = 1
    return m


def one(pred, gt):
    return baseline_metrics([pred], [gt])


def test_square_shifted_by_one_pixel():
    # 20x20: d = round(0.02 * 28.3) = 1, so each boundary is the 36-pixel ring of the square;
    # shifted right by one, the rings share their top and bottom rows but one pixel: 18 of 54
    m = one(square(5, 6), square(5, 5))
    assert m["per_class_boundary"][1] == pytest.approx(100 * 18 / 54)
    assert m["per_class"][1] == pytest.approx(100 * 90 / 110)


def test_perfect_and_empty_predictions():
    gt = square(5, 5)
    perfect = one(gt, gt)
    assert perfect["boundary_iou"] == perfect["mba"] == perfect["miou"] == perfect["miou_image"] == 100.0
    empty = one(np.zeros_like(gt), gt)
    assert empty["per_class_boundary"][1] == 0.0
    # radii all 1 at 20x20; the gradient with the 3x3 ellipse (a cross) is the 36-pixel ring
    # inside the square (missed) and the 40-pixel ring outside it without corners (agreed)
    assert empty["mba"] == pytest.approx(100 * 40 / 76)


def test_a_class_touching_the_image_border_has_boundary_along_the_border():
    m = square(0, 0)
    assert mask_boundary(m, 1).sum() == 36  # 100 - the 8x8 interior: rows/cols 0 count
    assert one(m, m)["per_class_boundary"][1] == 100.0
    shifted = one(square(1, 0), m)["per_class_boundary"][1]
    assert shifted == pytest.approx(100 * ref_boundary_iou([square(1, 0)], [m])[1][1])


# -- bootstrap ---------------------------------------------------------------------------------
def results_of(preds, gts, refined):
    """SampleResults as they read back from records on disk."""
    out = []
    for i, (p, g, r) in enumerate(zip(preds, gts, refined)):
        b = GroundTruthBoundaries(g)
        gt = torch.from_numpy(g.astype(np.int64))
        counts = {name: pixel_counts(torch.from_numpy(x.astype(np.int64)), gt, C, b)
                  for name, x in ((BASELINE, p), ("same", p), ("crf", r))}  # fmt: skip
        rec = to_record(SampleResult(f"{i:03d}", {}, counts))
        out.append(from_record(json.loads(json.dumps(rec))))
    return out


def test_bootstrap_intervals(real_pairs):
    gts, preds = real_pairs
    refined = [cv2.medianBlur(p, 7) for p in preds]
    results = results_of(preds, gts, refined)
    edges = [0, 40, 80, 100]
    doc = summarize(results, ["same", "crf"], NAMES, edges, resamples=500, seed=3)
    for metric, gain_key, ci_key in (("miou", "gain", "ci95"), ("boundary_iou", "boundary_iou_gain", "boundary_iou_ci95"),
                                     ("mba", "mba_gain", "mba_ci95"), ("miou_image", "miou_image_gain", "miou_image_ci95")):  # fmt: skip
        assert doc["strategies"]["same"][ci_key] == [0.0, 0.0]  # identical to the baseline
        lo, hi = doc["strategies"]["crf"][ci_key]
        assert lo <= doc["strategies"]["crf"][gain_key] <= hi and lo < hi
    again = summarize(results, ["crf"], NAMES, edges, 500, 3)["strategies"]["crf"]
    other = summarize(results, ["crf"], NAMES, edges, 500, 4)["strategies"]["crf"]
    assert again["ci95"] == doc["strategies"]["crf"]["ci95"] and other["ci95"] != again["ci95"]


def test_bootstrap_gives_every_stratum_an_interval_on_a_voc_val_sized_run():
    """1,449 images x 3 strategies x 1,000 resamples (its time: scripts/benchmark.py, not a test)."""
    from g4seg.evaluation.synthetic import voc_like_records

    results = [from_record(r) for r in voc_like_records(np.random.default_rng(0), 1449, ["a", "b", "c"])]
    doc = summarize(results, ["a", "b", "c"], NAMES, [0, 40, 80, 100], 1000, 0)
    assert all(s["ci95"] is not None for s in doc["strategies"]["a"]["strata"])


# -- through predict: one and two processes, resume --------------------------------------------
def test_report_metrics_option_and_rebuild_reproduce_the_intervals(tmp_path):
    from helpers import cli

    out = tmp_path / "run"
    finished_run(out, "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "4", "--scoring.bootstrap", "200")
    first = read_metrics(out)
    assert first["bootstrap"] == {"resamples": 200, "seed": 0, "level": 0.95}
    crf = first["strategies"]["densecrf"]
    for ci, gain in (("ci95", "gain"), ("boundary_iou_ci95", "boundary_iou_gain"), ("mba_ci95", "mba_gain")):
        assert crf[ci][0] <= crf[gain] <= crf[ci][1]
        assert all(s[ci] is None or s[ci][0] <= s[gain] <= s[ci][1] for s in crf["strata"])
    own = (out / "summary.md").read_text()
    code, table, err = cli("report", str(out), "--metrics", "boundary_iou", "mba")
    assert code == 0, err
    assert "Which strategy wins where: Boundary IoU gain" in table  # the first chosen metric in the terminal
    assert f"report: {(out / 'reports' / '1' / 'report.html').resolve()}" in table  # never over the run's own
    summary = (out / "reports" / "1" / "summary.md").read_text()  # the full table has the chosen columns
    assert "Boundary IoU gain [95% CI]" in summary and "mBA gain [95% CI]" in summary and "mIoU baseline" not in summary
    assert read_metrics(out / "reports" / "1") == first  # the run's own bootstrap settings, from run.json
    assert (out / "summary.md").read_text() == own
    code, _, err = cli("report", str(out), "--metrics", "nope")
    assert code == 2 and "--metrics: unknown ['nope']" in err


def test_unknown_table_metric_in_the_config_names_its_key(tmp_path):
    from helpers import cli, error_line

    code, _, err = cli("predict", "--config", "configs/densecrf.yaml", "--output_dir", str(tmp_path / "o"),
                       "--scoring.metrics", "[miou, nope]")  # fmt: skip
    assert error_line(code, err).startswith("g4seg: error: scoring.metrics: unknown ['nope']; choose from")
