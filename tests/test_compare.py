"""`g4seg compare`: strategies of several run folders judged as one run, on the images they
share, refused when the runs start from other coarse masks."""

from __future__ import annotations

import json

import pytest

from helpers import cli, error_line, finished_run, read_metrics

BASE = ["predict", "--config", "configs/densecrf.yaml", "--scoring.bootstrap", "300"]
CRF5 = json.dumps([{"name": "crf5", "refiners": [{"class_path": "strategies.refiners.DenseCRF",
                                                   "init_args": {"iterations": 5}}]}])  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    top = tmp_path_factory.mktemp("runs")
    a = finished_run(top / "crf10", *BASE, "--data.init_args.limit", "5")
    b = finished_run(top / "crf5", *BASE, "--data.init_args.limit", "4", "--model.strategies", CRF5)
    return a, b


def test_compare_two_runs_on_their_shared_images(runs, tmp_path):
    a, b = runs
    code, out, err = cli("compare", str(a), str(b), "--bootstrap", "300", "--output", str(tmp_path / "cmp"))
    assert code == 0, err[-3000:]
    assert out.startswith("compared on the 4 images every run has (crf10: 5, crf5: 4)")
    assert "Which strategy wins where: mIoU gain" in out
    for name in ("crf10:identity", "crf10:densecrf", "crf5:crf5"):
        assert name in out
    both = read_metrics(tmp_path / "cmp")
    assert set(both["strategies"]) == {"crf10:identity", "crf10:densecrf", "crf5:crf5"}
    assert both["num_samples"] == 4
    # the second run covers the same 4 images alone: its strategy's numbers are its own run's
    own = read_metrics(b)["strategies"]["crf5"]
    assert both["strategies"]["crf5:crf5"]["miou_refined"] == own["miou_refined"]
    assert both["strategies"]["crf5:crf5"]["miou_baseline"] == own["miou_baseline"]
    assert "Per class: IoU over all images" in (tmp_path / "cmp" / "summary.md").read_text()


def test_runs_from_other_coarse_masks_are_refused(runs, tmp_path):
    a, _ = runs
    other = finished_run(tmp_path / "other", *BASE, "--data.init_args.limit", "2",
                         "--data.init_args.coarse.init_args.seed", "7")  # fmt: skip
    line = error_line(*cli("compare", str(a), str(other))[::2])
    assert line.startswith(f"g4seg: error: {other} and {a} start from other coarse masks (sample ")
    assert error_line(*cli("compare", str(a))[::2]) == "g4seg: error: g4seg compare needs two run folders or more"
