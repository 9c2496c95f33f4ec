"""Hostile input and planted files: nothing outside the run folder or the dataset is touched
or read, ids cannot escape or collide, photos are read as displayed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import DEMO, ROOT, cli, error_line

BASE = ["predict", "--config", "configs/densecrf.yaml", "--scoring.bootstrap", "0"]


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    (out / ".lock").symlink_to(victim)
    line = error_line(*cli(*BASE, "--data.init_args.limit", "1", "--output_dir", str(out))[::2])
    assert "cannot open the run lock" in line and "symbolic link" in line
    assert victim.read_text() == "precious"


def test_a_planted_write_test_link_is_never_written_through(tmp_path):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    (out / ".write-test").symlink_to(victim)
    code, _, err = cli(*BASE, "--data.init_args.limit", "1", "--output_dir", str(out))
    assert code == 0, err[-2000:]
    assert victim.read_text() == "precious"


def test_fresh_never_moves_a_folder_another_run_is_writing(tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(*BASE, "--data.init_args.limit", "1", "--output_dir", str(out))
    assert code == 0, err[-2000:]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, '.'); from g4seg.run.folder import FolderLock; "
                               f"lock = FolderLock(r'{out}'); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        line = error_line(*cli(*BASE, "--data.init_args.limit", "2", "--output_dir", str(out), "--fresh", "true")[::2])
        assert "another g4seg run" in line
        assert not (tmp_path / "run.old-1").exists() and (out / "run.json").is_file()
    finally:
        holder.kill()


@pytest.mark.parametrize("bad", ["../outside/x", "/etc/passwd", "a//b", "./x"])
def test_ids_that_leave_the_dataset_are_refused(tmp_path, bad):
    split = tmp_path / "split.txt"
    split.write_text(f"2007_000032\n{bad}\n")
    line = error_line(*cli(*BASE, "--data.init_args.split", str(split), "--output_dir", str(tmp_path / "o"))[::2])
    assert f"sample id {bad!r} leaves the dataset folder" in line


def test_a_linked_directory_out_of_the_dataset_is_not_followed_but_linked_files_are(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(DEMO, root)
    (tmp_path / "elsewhere").mkdir()
    shutil.copyfile(root / "SegmentationClass" / "2007_000032.png", tmp_path / "elsewhere" / "x.png")
    shutil.copyfile(root / "JPEGImages" / "2007_000032.jpg", tmp_path / "elsewhere" / "x.jpg")
    (root / "SegmentationClass" / "sub").symlink_to(tmp_path / "elsewhere")
    (root / "JPEGImages" / "sub").symlink_to(tmp_path / "elsewhere")
    split = tmp_path / "split.txt"
    split.write_text("sub/x\n")
    line = error_line(*cli(*BASE, "--data.init_args.root", str(root), "--data.init_args.split", str(split),
                           "--output_dir", str(tmp_path / "o"))[::2])  # fmt: skip
    assert "sample 'sub/x' lies in" in line and "outside" in line and "not followed" in line
    # a linked file (a prepared dataset's link farm) is read
    link = root / "SegmentationClass" / "2007_000032.png"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere" / "x.png")
    split.write_text("2007_000032\n")
    code, _, err = cli(*BASE, "--data.init_args.root", str(root), "--data.init_args.split", str(split),
                       "--output_dir", str(tmp_path / "o2"))  # fmt: skip
    assert code == 0, err[-2000:]


def test_record_file_names_are_collision_free_and_reversible():
    from urllib.parse import unquote

    from g4seg.files import safe_name

    ids = ["sub/x", "sub__x", "sub%2Fx", "a/b/c"]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids) and all("/" not in n for n in names)
    assert [unquote(n) for n in names] == ids


def test_photos_are_read_as_displayed(tmp_path):
    """EXIF orientation 6 (the camera held sideways): the stored pixels rotated 90 degrees
    clockwise are what a viewer shows and what masks are drawn on."""
    from g4seg.images import read_image

    stored = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    shown = read_image(path)
    assert shown.shape == (50, 30, 3)
    assert np.array_equal(shown, np.rot90(stored, k=-1))


def test_the_fingerprint_holds_the_resolved_dataset_root(tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(*BASE, "--data.init_args.limit", "1", "--output_dir", str(out))
    assert code == 0, err[-2000:]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config"]["data"]["init_args"]["root"] == str((ROOT / "data/demo/voc2012").resolve())
    assert os.path.isabs(manifest["fingerprint"]["data.init_args.root"])


def test_an_edited_input_file_is_recomputed_on_resume(tmp_path):
    """The bytes each sample was computed from are hashed as read; a rerun recomputes the
    samples whose ground-truth or coarse file changed, and ends with the numbers of a fresh
    run on the edited data (not the old ones)."""
    root = tmp_path / "voc"
    shutil.copytree(DEMO, root)
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    ids = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))[:3]
    for i in ids:  # a segmenter's masks: the ground truth itself, a coarse file per id
        shutil.copy(root / "SegmentationClass" / f"{i}.png", coarse / f"{i}.png")
    args = [*BASE, "--data.init_args.root", str(root), "--data.init_args.limit", "3",
            "--data.init_args.coarse", json.dumps({"class_path": "datamodules.CoarseFromFiles",
                                                   "init_args": {"folder": str(coarse), "soften_sigma": 3.0}})]  # fmt: skip
    out = tmp_path / "run"
    code, _, err = cli(*args, "--output_dir", str(out))
    assert code == 0, err[-2000:]
    record = json.loads((out / "records" / f"{ids[1]}.json").read_text())
    assert set(record["digests"]) == {record["files"]["image"], record["files"]["gt"], record["files"]["coarse"]}

    def erode(path):  # a changed file: every object shrinks by a few pixels
        import cv2

        labels = np.array(Image.open(path))
        eroded = cv2.erode(labels, np.ones((9, 9), np.uint8))
        image = Image.fromarray(eroded.astype(np.uint8), mode="P")
        image.putpalette(Image.open(path).getpalette())
        image.save(path)

    untouched = (out / "records" / f"{ids[0]}.json").stat().st_mtime_ns
    erode(coarse / f"{ids[1]}.png")
    erode(root / "SegmentationClass" / f"{ids[2]}.png")
    code, _, err = cli(*args, "--output_dir", str(out))
    assert code == 0, err[-2000:]
    assert "g4seg: 2 samples' input files changed since they were computed (e.g. " in err
    assert (out / "records" / f"{ids[0]}.json").stat().st_mtime_ns == untouched  # resumed, not recomputed
    fresh = tmp_path / "fresh"
    code, _, err = cli(*args, "--output_dir", str(fresh))
    assert code == 0, err[-2000:]
    assert json.loads((out / "metrics.json").read_text()) == json.loads((fresh / "metrics.json").read_text())
    before = json.loads((fresh / "metrics.json").read_text())
    assert record["counts"] != json.loads((out / "records" / f"{ids[1]}.json").read_text())["counts"]
    assert before["num_samples"] == 3
