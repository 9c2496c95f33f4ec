"""The fault battery of the surfaces beside predict: `g4seg compare` / `report` arguments and
output folders, records edited by hand, and the dataset / coarse converters on bad files.
Each case ends in one line `g4seg: error: ...` naming what is wrong, exit 2, no traceback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, cli, error_line, finished_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a = finished_run(base / "a", "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2",
                     "--scoring.bootstrap", "0")  # fmt: skip
    shutil.copytree(a, base / "b")
    (base / "a_file").write_text("x")
    return a, base / "b", base / "a_file"


ARGUMENT_CASES = [
    (["--edges", "0", "50", "200"], "strata edges (--edges) must be increasing, at least two, initial IoUs in percent"),
    (["--edges", "0", "nan", "100"], "each in [0, 100]; got [0.0, nan, 100.0]"),
    (["--edges", "-10", "50", "100"], "got [-10.0, 50.0, 100.0]"),
    (["--edges", "50", "10", "100"], "increasing"),
    (["--bootstrap", "-5"], "--bootstrap must be >= 0 (0: no intervals), got -5"),
    (["--seed", "-1"], "--seed (the bootstrap's) must be >= 0, got -1"),
]


@pytest.mark.parametrize("command", ["compare", "report"])
@pytest.mark.parametrize("args,expected", ARGUMENT_CASES)
def test_bad_arguments_are_one_line(runs, command, args, expected):
    a, b, _ = runs
    folders = [str(a), str(b)] if command == "compare" else [str(a)]
    line = error_line(*cli(command, *folders, *args)[::2])
    assert expected in line, line


@pytest.mark.parametrize("command", ["compare", "report"])
def test_output_folders_that_cannot_be_made_are_one_line(runs, command, tmp_path):
    a, b, a_file = runs
    folders = [str(a), str(b)] if command == "compare" else [str(a)]
    line = error_line(*cli(command, *folders, "--output", str(a_file / "out"))[::2])
    assert line == f"g4seg: error: {a_file / 'out'}: --output cannot be made here (Not a directory)"
    line = error_line(*cli(command, *folders, "--output", "/proc/g4seg-report")[::2])
    assert line.startswith("g4seg: error: /proc/g4seg-report: --output cannot be made here")


def test_zero_resamples_say_there_are_no_intervals(runs):
    a, b, _ = runs
    code, out, err = cli("compare", str(a), str(b), "--bootstrap", "0")
    assert code == 0, err
    assert "No confidence intervals: bootstrap 0 resamples" in out and "95% CI" not in out


RECORD_CASES = {
    "a class id out of range": (lambda r: r["counts"]["baseline"]["inter"].update({"99": 1}),
                                "field 'counts.baseline.inter' has class id 99, outside the run's 21 classes"),
    "notes as a list": (lambda r: r.__setitem__("notes", ["x"]), "field 'notes' must be an object of lists of text, not list"),
    "digests as a list": (lambda r: r.__setitem__("digests", ["x"]), "field 'digests' must be an object of hashes, not list"),
    "a note that is not a list": (lambda r: r.__setitem__("notes", {"densecrf": "x"}), "field 'notes.densecrf' must be a list"),
    "counts of a source as a list": (lambda r: r["counts"].__setitem__("densecrf", [1]), "field 'counts.densecrf' must be an object"),
    "seconds as text": (lambda r: r.__setitem__("seconds", "fast"), "field 'seconds' must be an object of numbers"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_a_record_edited_by_hand_names_the_file_and_field(runs, tmp_path, case):
    a, _, _ = runs
    run = shutil.copytree(a, tmp_path / "run")
    path = sorted((run / "records").glob("*.json"))[0]
    record = json.loads(path.read_text())
    edit, expected = RECORD_CASES[case]
    edit(record)
    path.write_text(json.dumps(record))
    line = error_line(*cli("report", str(run))[::2])
    assert line == f"g4seg: error: {path}: {expected}" + line.split(expected, 1)[1] and "delete it to recompute" in line


def _script(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_prepare_coarse_on_bad_cam_files_and_out_paths(tmp_path):
    cams = tmp_path / "cams"
    cams.mkdir()
    np.save(cams / "a.npy", {"keys": np.array([3]), "attn_highres": np.zeros((1, 4, 4), np.float16)})
    good = (cams / "a.npy").read_bytes()
    for name, data in (("truncated", good[: len(good) // 2]), ("garbage", b"\x80\x04garbage" * 40)):
        (cams / "a.npy").write_bytes(data)
        line = error_line(*_script("scripts/prepare_coarse.py", "clip-es", "--cams", str(cams), "--out",
                                   str(tmp_path / "npz"), "--trust-pickle")[::2])  # fmt: skip
        assert line.startswith(f"g4seg: error: {cams / 'a.npy'}: cannot read as a CLIP-ES CAM file ("), (name, line)
    (cams / "a.npy").write_bytes(good)
    (tmp_path / "file").write_text("x")
    line = error_line(*_script("scripts/prepare_coarse.py", "clip-es", "--cams", str(cams), "--out",
                               str(tmp_path / "file"), "--trust-pickle")[::2])  # fmt: skip
    assert line == f"g4seg: error: {tmp_path / 'file'}: --out must be a folder"


def _stuff(tmp_path: Path, png_bytes: bytes) -> Path:
    root = tmp_path / "stuff"
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "annotations" / "val2017").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "images" / "val2017" / "000000000001.jpg")
    (root / "annotations" / "val2017" / "000000000001.png").write_bytes(png_bytes)
    return root


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["truncated", "empty", "rgb"])
def test_prepare_datasets_on_bad_coco_stuff_label_maps(tmp_path, case, capsys):
    from datamodules import prepare

    good = _png(np.full((4, 5), 3, np.uint8))
    data = {"truncated": good[: len(good) // 2], "empty": b"", "rgb": _png(np.zeros((4, 5, 3), np.uint8))}[case]
    root = _stuff(tmp_path, data)
    code = prepare.main(["coco-object", "--stuff", str(root), "--out", str(tmp_path / "out")])
    line = error_line(code, capsys.readouterr().err)
    png = root / "annotations" / "val2017" / "000000000001.png"
    expected = "one 8-bit channel of class ids, this one is RGB" if case == "rgb" else "unreadable COCO-Stuff label map"
    assert line.startswith(f"g4seg: error: {png}: ") and expected in line, line


@pytest.mark.parametrize("case", ["truncated", "no LabelMap"])
def test_prepare_datasets_on_bad_context_annotations(tmp_path, case, capsys):
    from datamodules import prepare
    from helpers import context_sources

    voc, trainval = context_sources(tmp_path, "LabelMap" if case == "truncated" else "Other")
    mat = trainval / "2008_000002.mat"
    if case == "truncated":
        mat.write_bytes(mat.read_bytes()[:150])
    code = prepare.main(["context", "--annotations", str(trainval), "--voc2010", str(voc), "--out",
                         str(tmp_path / "out")])  # fmt: skip
    line = error_line(code, capsys.readouterr().err)
    expected = "unreadable PASCAL Context annotation" if case == "truncated" else "no LabelMap in it (keys: ['Other'])"
    assert line.startswith(f"g4seg: error: {mat}: ") and expected in line, line
