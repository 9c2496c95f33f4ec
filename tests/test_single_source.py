"""The records are the single source of every number: a run's metrics.json equals a plain
NumPy recomputation from the masks it wrote and the ground truth it read; identical chain
prefixes are computed once and give what each chain gives alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import finished_run, read_metrics

EDGES = [0, 40, 80, 100]


def numpy_metrics(out, source: str, classes: int = 21) -> dict:
    """Dataset mIoU, per-image mIoU and per-stratum mIoU of masks/<source>/*.png, strata from
    masks/baseline (initial IoU of each (image, foreground class) instance), from scratch."""
    inter, union, in_gt = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    s_inter, s_union, s_count = np.zeros((3, classes)), np.zeros((3, classes)), np.zeros(3, int)
    per_image, per_image_base = [], []
    for record_path in sorted((out / "records").glob("*.json")):
        record = json.loads(record_path.read_text())
        gt = np.asarray(Image.open(record["files"]["gt"]), dtype=np.int64)
        pred = np.asarray(Image.open(out / "masks" / source / f"{record_path.stem}.png"), dtype=np.int64)
        base = np.asarray(Image.open(out / "masks" / "baseline" / f"{record_path.stem}.png"), dtype=np.int64)
        valid = gt != 255
        ious, base_ious, present = [], [], []
        for c in range(classes):
            i, u = ((pred == c) & (gt == c) & valid).sum(), (((pred == c) | (gt == c)) & valid).sum()
            inter[c] += i
            union[c] += u
            in_gt[c] += ((gt == c) & valid).sum()
            if u:
                ious.append(i / u)
            bu = (((base == c) | (gt == c)) & valid).sum()
            if bu:  # the classes an image is judged on: in the coarse mask or the GT
                present.append(c)
                base_ious.append(((base == c) & (gt == c) & valid).sum() / bu)
            bu = (((base == c) | (gt == c)) & valid).sum()
            if c and bu:
                initial = 100 * (((base == c) & (gt == c) & valid).sum()) / bu
                s = min(int(np.searchsorted(EDGES, initial, side="right")) - 1, 2)
                s_inter[s, c] += i
                s_union[s, c] += u
                s_count[s] += 1
        per_image.append(np.mean(ious))
        ref_ious = [i / u for c in present if (u := (((pred == c) | (gt == c)) & valid).sum()) for i in [((pred == c) & (gt == c) & valid).sum()]]
        per_image_base.append(100 * (np.mean(ref_ious) if ref_ious else 0.0) - 100 * np.mean(base_ious))
    seen = union > 0
    has_gt = in_gt > 0
    wins = int((np.array(per_image_base) > 0).sum())
    strata = [(int(s_count[s]), 100 * np.mean(s_inter[s][s_union[s] > 0] / s_union[s][s_union[s] > 0])) for s in range(3)]
    return {"miou": 100 * np.mean(inter[seen] / union[seen]), "miou_image": 100 * np.mean(per_image), "strata": strata,
            "pixel_accuracy": 100 * inter.sum() / in_gt.sum(), "macc": 100 * np.mean(inter[has_gt] / in_gt[has_gt]),
            "wins": wins, "per_class": {c: 100 * inter[c] / union[c] for c in range(classes) if union[c]}}


def test_run_metrics_equal_a_numpy_recomputation_from_the_written_masks(tmp_path):
    out = finished_run(tmp_path / "run", "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "6",
                       "--scoring.bootstrap", "0")  # fmt: skip
    metrics = read_metrics(out)
    for source, key in (("baseline", "baseline"), ("densecrf", "refined")):
        want = numpy_metrics(out, source)
        got = metrics["strategies"]["densecrf"]
        assert got[f"miou_{key}"] == pytest.approx(want["miou"], abs=1e-9)
        assert got[f"miou_image_{key}"] == pytest.approx(want["miou_image"], abs=1e-9)
        assert got[f"pixel_accuracy_{key}"] == pytest.approx(want["pixel_accuracy"], abs=1e-9)
        assert got[f"macc_{key}"] == pytest.approx(want["macc"], abs=1e-9)
        if source == "densecrf":  # images whose mIoU over their classes went up
            assert got["images"]["wins"] == want["wins"] and sum(got["images"].values()) == 6
        for stratum, (count, miou) in zip(got["strata"], want["strata"]):
            assert stratum["count"] == count
            assert stratum[f"miou_{key}"] == pytest.approx(miou, abs=1e-9)
    assert sum(s["count"] for s in metrics["strategies"]["densecrf"]["strata"]) > 6

    # the per-class table of summary.md (and the page): coarse IoU, then each strategy's (gain)
    from g4seg.classes import resolve_classes

    names = resolve_classes("voc")
    table = (out / "summary.md").read_text().split("Per class: IoU over all images, coarse and refined (gain)")[1]
    rows = {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")[1:]]
            for line in table.strip().splitlines()[2:]}  # fmt: skip
    coarse, crf = numpy_metrics(out, "baseline")["per_class"], numpy_metrics(out, "densecrf")["per_class"]
    assert set(rows) == {names[c] for c in coarse}
    for c, iou in coarse.items():
        shown_coarse, shown_identity, shown_crf = rows[names[c]]
        assert float(shown_coarse) == pytest.approx(iou, abs=0.005)
        assert shown_identity == f"{iou:.2f} (+0.00)"
        assert float(shown_crf.split(" (")[0]) == pytest.approx(crf[c], abs=0.005)
        assert float(shown_crf.split(" (")[1].rstrip(")")) == pytest.approx(crf[c] - iou, abs=0.011)


def test_identical_chain_prefixes_run_once_and_equal_each_chain_alone(demo_root, monkeypatch):
    from datamodules import VOCFolderDataModule
    from g4seg.interfaces import Chain
    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.injectors import AttentionInjection
    from strategies.refiners import Correspondence, DenseCRF

    dm = VOCFolderDataModule(str(demo_root), limit=2)
    dm.setup()
    samples = [dm.dataset[0], dm.dataset[1]]
    specs = [
        StrategySpec("g4seg", [Correspondence(beta=0.8)], "emi"),
        StrategySpec("g4seg+crf", [Correspondence(beta=0.8), DenseCRF()], "emi"),
        StrategySpec("g4seg_b9", [Correspondence(beta=0.9)], "emi"),  # other settings: its own computation
        StrategySpec("crf", [DenseCRF()]),  # DenseCRF on the coarse mask, not on G4Seg's output
    ]
    module = G4SegModule(specs, {"emi": AttentionInjection()}, dm.class_names)
    calls = {"corr": 0, "crf": 0}
    real_corr, real_crf = Correspondence.refine, DenseCRF.refine
    monkeypatch.setattr(Correspondence, "refine", lambda *a: calls.__setitem__("corr", calls["corr"] + 1) or real_corr(*a))
    monkeypatch.setattr(DenseCRF, "refine", lambda *a: calls.__setitem__("crf", calls["crf"] + 1) or real_crf(*a))
    results = module.predict_step(samples)
    assert calls == {"corr": 2 * 2, "crf": 2 * 2}  # per sample: beta 0.8 and 0.9; CRF after G4Seg and alone
    generated, _ = module.generate(samples)
    for sample, result in zip(samples, results):
        for spec in specs:
            gen = generated["emi"][sample.id] if spec.injector else None
            alone = Chain(spec.refiners).refine(sample, sample.coarse, gen).labels()
            assert torch.equal(result.labels[spec.name], alone), spec.name


def test_winners_view_shows_the_runs_gains_flags_and_best(tmp_path):
    from g4seg.report import winners

    out = finished_run(tmp_path / "run", "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "8",
                       "--scoring.bootstrap", "2000")  # fmt: skip
    metrics = read_metrics(out)
    labels, names, rows = winners.grid(metrics, "boundary_iou")
    assert names == ["densecrf"] and labels[0] == "all"  # the Identity control is left out
    entries = [metrics["strategies"]["densecrf"]] + metrics["strategies"]["densecrf"]["strata"]
    for (c,), e in zip(rows, entries):
        if e.get("count") == 0:
            assert c["gain"] is None
            continue
        assert c["gain"] == e["boundary_iou_gain"] and c["ci"] == e["boundary_iou_ci95"]
        lo, hi = e["boundary_iou_ci95"]
        assert c["sure"] == ((lo > 0 or hi < 0) and e.get("count", 99) >= 5)
    text = winners.terminal(metrics, "miou")
    assert all(len(line) <= 100 for line in text.splitlines())
    first_row = text.splitlines()[2]
    assert first_row.startswith("all") and f"{metrics['strategies']['densecrf']['gain']:+.2f}" in first_row
