"""Everything a user can get wrong ends in one line `g4seg: error: ...` naming the file or
key, exit code 2, no traceback: through the real CLI entry point (in-process, fast), and in
a DataLoader worker and under 2-process DDP (subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from g4seg.evaluation.records import COUNT_KEYS
from PIL import Image

from helpers import DEMO, ROOT, cli, finished_run
from helpers import error_line as the_line

BASE = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("finished"), *BASE)


def broken_copy(finished, tmp_path, content: str):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    record = sorted((out / "records").glob("*.json"))[0]
    record.write_text(content)
    return out, record


@pytest.mark.parametrize("args,expected", [
    (["--data.init_args.classes", "nope"], "g4seg: error: unknown class preset 'nope'"),
    (["--data.init_args.batch_size", "0"], "g4seg: error: data.init_args.batch_size must be >= 1, got 0"),
    (["--data.init_args.num_workers", "-1"], "g4seg: error: data.init_args.num_workers must be >= 0, got -1"),
    (["--data.init_args.limit", "-1"], "g4seg: error: data.init_args.limit must be a whole number >= 1"),
    (["--data.init_args.limit", "0"], "g4seg: error: data.init_args.limit must be a whole number >= 1"),
    (["--model.strata_edges", "[0, 80, 40, 100]"], "g4seg: error: strata edges (model.strata_edges) must be increasing"),
    (["--output_dir", "/proc/g4seg-cannot-write-here"], "g4seg: error: /proc/g4seg-cannot-write-here: output folder is not writable"),
    (["--trainer.devices", "3", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"],
     "g4seg: error: 3 processes need at least 3 samples, the dataset has 2; use --trainer.devices 2"),
    (["--data.init_args.root", "/nonexistent/voc"], "g4seg: error: 1 files or folders this config names do not exist"),
    (["--trainer.devics", "2"], "g4seg: error: unknown option --trainer.devics (did you mean --trainer.devices?)"),
    (["--data.init_args.limt", "3"], "g4seg: error: data: VOCFolderDataModule takes no option 'limt' (did you mean limit?)"),
    (["--data.init_args.batch_size", "abc"], "g4seg: error: data.init_args.batch_size: expected int. Got value: abc"),
    (["--data.init_args.root", "README.md"], "g4seg: error: README.md/SegmentationClass: ground-truth folder is missing"),
])  # fmt: skip
def test_config_mistakes(tmp_path, args, expected):
    argv = [*BASE, "--output_dir", str(tmp_path / "out"), *args]
    assert the_line(*cli(*argv)[::2]).startswith(expected)


@pytest.mark.parametrize("args,expected", [
    (["--model.injectors.emi.init_args.inversion", "ddim", "--model.injectors.emi.init_args.inversion_steps", "7"],
     "g4seg: error: inversion_steps must divide the timestep 400 (got 7)"),
    (["--model.injectors.emi.init_args.mode", "bogus"], "g4seg: error: mode must be 'add' or 'densediffusion'"),
    (["--model.injectors.emi.init_args.prompt", "photo"], "g4seg: error: prompt 'photo' needs exactly one {} for the class name"),
])  # fmt: skip
def test_injector_mistakes(tmp_path, args, expected):
    argv = ["predict", "--config", "configs/demo.yaml", "--data.init_args.limit", "1", "--output_dir", str(tmp_path / "o")]
    assert the_line(*cli(*argv, *args)[::2]).startswith(expected)


def test_missing_diffusion_model_is_one_error_with_a_download_hint(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "configs" / "demo.yaml").read_text().replace("model: tiny, timestep", "model: /nonexistent/sd21, timestep"))
    code, _, err = cli("predict", "--config", str(config), "--output_dir", str(tmp_path / "o"))
    assert the_line(code, err).startswith("g4seg: error: 1 files or folders this config names do not exist")
    assert "  /nonexistent/sd21  (model.injectors.emi.init_args.model)" in err
    assert "get it: the diffusion model: hf download stabilityai/stable-diffusion-2-1-base" in err


def test_every_missing_model_and_dataset_of_a_paper_config_is_listed_at_once(tmp_path):
    """A fresh machine: Table XI names a dataset, a segmenter's output and five models, each
    path listed once with the keys that name it and how to get it, before any model loads."""
    code, _, err = cli("predict", "--config", "configs/paper/table11_refiners.yaml", "--output_dir", str(tmp_path / "o"))
    assert the_line(code, err) == ("g4seg: error: 7 files or folders this config names do not exist (nothing was run); "
                                   "get them on a machine with internet access and copy them there:")  # fmt: skip
    listed = [line.split("  (")[0].strip() for line in err.splitlines() if line.startswith("  /")]
    assert listed == ["/models/cascadepsp/model", "/models/open_clip/ViT-B-16-openai.bin", "/models/sam-vit-huge",
                      "/models/segrefiner/segrefiner_hr_latest.pth", "/models/stable-diffusion-2-1-base",
                      "/data/coco_object", "/data/sclip/coco_object_val_probs"]  # fmt: skip
    assert err.count("get it: ") == 7 and "hkchengrex/CascadePSP" in err and "hf download facebook/sam-vit" in err
    assert "MengyuWang826/SegRefiner" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content,expected", [
    ("{not json", "corrupt record"),
    ("{}", "not a complete record (needs id, counts)"),
    (json.dumps({"id": "other", "counts": {}, "initial_iou": {}}), "holds sample 'other'"),
    (json.dumps({"id": "2007_000032", "counts": {"baseline": {k: {} for k in COUNT_KEYS}}}),
     "no counts for identity, densecrf"),
    (json.dumps({"id": "2007_000032", "counts": {"baseline": {**{k: {} for k in COUNT_KEYS}, "inter": {"1": "many"}}}}),
     "malformed record (ValueError"),
])
def test_broken_records(finished, tmp_path, content, expected):
    out, record = broken_copy(finished, tmp_path, content)
    line = the_line(*cli(*BASE, "--output_dir", str(out))[::2])
    assert line.startswith(f"g4seg: error: {record}: ") and expected in line and "delete it to recompute" in line
    line = the_line(*cli("report", str(out))[::2])
    assert expected in line


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    assert the_line(*cli("report", str(tmp_path))[::2]) == f"g4seg: error: {tmp_path}: no run.json; not a g4seg predict output folder"


def test_report_with_bad_edges(finished):
    assert "strata edges (--edges) must be increasing" in the_line(*cli("report", str(finished), "--edges", "50", "10")[::2])


def write_probs(folder, sample_id, **arrays):
    folder.mkdir(exist_ok=True)
    np.savez(folder / f"{sample_id}.npz", **arrays)


SIZE = (281, 500)  # 2007_000032 (H, W)


@pytest.mark.parametrize("arrays,expected", [
    ({"probs": np.full((2, *SIZE), np.nan, np.float32), "class_ids": np.array([0, 1])}, "hold NaN at"),
    ({"probs": np.full((2, *SIZE), np.inf, np.float32), "class_ids": np.array([0, 1])}, "hold inf at"),
    ({"probs": np.full((2, *SIZE), 0.5, np.float32), "class_ids": np.array([0.0, 3.7])}, "'class_ids' must be whole numbers"),
    ({"probs": np.full((3, *SIZE), 0.3, np.float32), "class_ids": np.array([0, 3, 3])}, "list a class more than once"),
    ({"probs": np.zeros((2, *SIZE), np.float32), "class_ids": np.array([0, 1])}, "0 everywhere for every class"),
    ({"probs": np.full((*SIZE, 21), 0.1, np.float32)}, "look stored as [H, W, C]"),
    ({"probs": np.full((2, *SIZE), 1.5, np.float32), "class_ids": np.array([0, 1])}, "must lie in [0, 1], found range [1.5, 1.5]"),
])  # fmt: skip
def test_bad_probability_files(tmp_path, arrays, expected):
    write_probs(tmp_path / "coarse", "2007_000032", **arrays)
    argv = [*BASE, "--data.init_args.limit", "1", "--data.init_args.coarse", "datamodules.CoarseFromFiles",
            "--data.init_args.coarse.folder", str(tmp_path / "coarse"), "--data.init_args.coarse.soften_sigma", "0",
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    line = the_line(*cli(*argv)[::2])
    assert line.startswith(f"g4seg: error: {tmp_path / 'coarse' / '2007_000032.npz'}: ") and expected in line


def broken_dataset(tmp_path, bad_id: str):
    root = tmp_path / "voc"
    shutil.copytree(DEMO, root)
    (root / "JPEGImages" / f"{bad_id}.jpg").write_bytes(b"not a jpeg")
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "g4seg.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=400)  # fmt: skip


def test_data_error_in_a_dataloader_worker(tmp_path):
    root = broken_dataset(tmp_path, "2007_000129")
    proc = run(*BASE, "--data.init_args.root", str(root), "--data.init_args.num_workers", "1", "--output_dir", str(tmp_path / "o"))
    line = the_line(proc.returncode, proc.stderr)
    assert line == f"g4seg: error: {root}/JPEGImages/2007_000129.jpg: cannot read image (cannot identify image file '{root}/JPEGImages/2007_000129.jpg')"


def test_data_error_on_one_rank_of_a_ddp_run(tmp_path):
    root = broken_dataset(tmp_path, "2007_000129")  # index 1: rank 1's sample
    proc = run(*BASE, "--data.init_args.root", str(root), "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.accelerator", "cpu", "--output_dir", str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("g4seg")]
    assert lines[0].startswith("g4seg: error (process 1): ") and "2007_000129.jpg: cannot read image" in lines[0]
    assert lines[1:] in ([], ["g4seg: process 0 stopped because another process of this run ended; if that one failed, "
                              "its 'g4seg: error (process N...)' line is above, otherwise it was killed"])


def test_image_suffix_in_capitals_is_found(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(DEMO, root)
    jpg = root / "JPEGImages" / "2007_000032.jpg"
    jpg.rename(jpg.with_suffix(".JPG"))
    code, _, err = cli(*BASE, "--data.init_args.root", str(root), "--output_dir", str(tmp_path / "o"))
    assert code == 0, err[-2000:]
    assert Image.open(jpg.with_suffix(".JPG")).size == (500, 281)


def test_a_corrupt_clip_checkpoint_is_one_error(tmp_path):
    """Random bytes where the open_clip weights should be: one line naming the file and the
    likely cause, not PyTorch's advice to load with weights_only=False."""
    bad = tmp_path / "ViT-B-16.bin"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    code, _, err = cli("predict", "--config", "configs/paper/tiny/table1_tsss.yaml", "--output_dir", str(tmp_path / "o"),
                       "--data.init_args.coarse.init_args.clip", "ViT-B-16",
                       "--data.init_args.coarse.init_args.pretrained", str(bad))  # fmt: skip
    assert the_line(code, err) == (f"g4seg: error: {bad}: not a readable checkpoint (UnpicklingError; a truncated or "
                                   "corrupt download?).")  # fmt: skip
    assert "weights_only" not in err
