"""The fault battery of what reads model weights and what trains: every checkpoint reader on
empty, truncated and corrupt files, fine-tuning's output folder, resolution, prompt, resume
from a broken checkpoint and a full disk, and models whose weights are NaN. Each ends in one
line naming the file."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ROOT, error_line
from g4seg.errors import USER_ERRORS


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    garbage = bytes(np.random.default_rng(len(data)).integers(0, 256, 4096, dtype=np.uint8))  # the same bytes every run
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": garbage}[how])


def first_line(call) -> str:
    with pytest.raises(USER_ERRORS) as caught:
        call()
    return str(caught.value).splitlines()[0]


HOW = ["empty", "truncated", "garbage"]


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_transformers_segmenter_folder(tmp_path, how):
    from datamodules import HFSegmenter
    from g4seg.models.tiny import tiny_segmenter

    net, processor = tiny_segmenter("tiny-segformer", ["background", "cat"])
    net.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    damage(tmp_path / "m" / "model.safetensors", how)
    line = first_line(lambda: HFSegmenter(model=str(tmp_path / "m")))
    assert line.startswith(f"{tmp_path / 'm'}: cannot load: ") and "corrupt download" in line, line


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_sam_folder(tmp_path, how):
    from g4seg.models.tiny import tiny_sam
    from strategies.refiners import SAMRefiner

    tiny_sam("sam").save_pretrained(tmp_path / "sam")
    damage(tmp_path / "sam" / "model.safetensors", how)
    line = first_line(lambda: SAMRefiner(model=str(tmp_path / "sam")))
    assert line.startswith(f"{tmp_path / 'sam'}: cannot load SAM: ") and "corrupt download" in line, line


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_diffusion_folder(tmp_path, how):
    import diffusers

    from g4seg.models.tiny import tiny_sd3
    from strategies.injectors import NoInjection

    diffusers.StableDiffusion3Pipeline(**tiny_sd3()).save_pretrained(tmp_path / "sd3")
    damage(next((tmp_path / "sd3" / "transformer").glob("*.safetensors")), how)
    line = first_line(lambda: NoInjection(model=str(tmp_path / "sd3")))
    assert line.startswith(f"{tmp_path / 'sd3'}") and "cannot load" in line and "corrupt download" in line, line


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("reader", ["SegRefiner", "CascadePSP", "CLIP"])
def test_damaged_checkpoint_files(tmp_path, reader, how):
    from g4seg.models.tiny import tiny_cascadepsp, tiny_clip

    if reader == "CLIP":
        from g4seg.models.clip import load_clip

        path = tmp_path / "clip.bin"
        torch.save(tiny_clip().state_dict(), path)
        damage(path, how)
        line = first_line(lambda: load_clip("ViT-B-16", str(path), True))
        assert line.startswith(f"{path}: not a readable checkpoint ("), line
        return
    from g4seg.models.segrefiner import TINY_CONFIG, DenoiseUNet
    from strategies.refiners import CascadePSP, SegRefiner

    path = tmp_path / "weights.pth"
    net = DenoiseUNet(TINY_CONFIG) if reader == "SegRefiner" else tiny_cascadepsp()
    torch.save(net.state_dict(), path)
    damage(path, how)
    build = {"SegRefiner": lambda: SegRefiner(weights=str(path)), "CascadePSP": lambda: CascadePSP(weights=str(path))}
    line = first_line(build[reader])
    assert line.startswith(f"{path}: not a readable {reader} checkpoint ("), line


# -- fine-tuning --------------------------------------------------------------------------------


def finetune(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/finetune_controlnet.py", "--config", "configs/finetune/tiny.yaml",
                           "--output_dir", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip


def test_finetuning_settings_that_cannot_work_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        ((tmp_path / "file", ), f"g4seg: error: {tmp_path / 'file'}: --output_dir cannot hold the run (Not a directory)"),
        ((tmp_path / "a", "--data.resolution", "100"), "g4seg: error: data.resolution 100 must be a multiple of 16"),
        ((tmp_path / "b", "--data.prompt", "{} and {}"), "g4seg: error: data.prompt '{} and {}' needs exactly one {}"),
    ]  # fmt: skip
    for (out, *args), expected in cases:
        done = finetune(out, *args)
        assert error_line(done.returncode, done.stderr).startswith(expected), done.stderr[-2000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    done = finetune(out, "--trainer.max_steps", "2", "--checkpoint_every", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("how", ["empty", "garbage", "pickle payload"])
def test_resuming_from_a_broken_last_checkpoint_is_one_line(trained, tmp_path, how):
    out = Path(shutil.copytree(trained, tmp_path / "run"))
    last = out / "checkpoints" / "last.ckpt"
    if how == "pickle payload":
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'ran'}",))

        last.write_bytes(pickle.dumps(Payload()))
    else:
        damage(last, how)
    done = finetune(out, "--trainer.max_steps", "4")
    line = error_line(done.returncode, done.stderr)
    assert line.startswith(f"g4seg: error: {last}: not a readable checkpoint ("), line
    assert not (tmp_path / "ran").exists()  # the payload never ran


def test_a_full_disk_keeps_the_last_whole_checkpoint_and_the_rerun_resumes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=28m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        out = disk / "run"  # a checkpoint of the tiny ControlNet is 11 MB: the second one does not fit
        done = finetune(out, "--trainer.max_steps", "6", "--checkpoint_every", "2")
        line = error_line(done.returncode, done.stderr)
        assert line.startswith(f"g4seg: error: {out / 'checkpoints'}/step=4.ckpt: no space left"), line
        state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert state["global_step"] == 2 and not list((out / "checkpoints").glob(".*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=96m", str(disk)], check=True)
        done = finetune(out, "--trainer.max_steps", "6", "--checkpoint_every", "2")
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"resuming from {out / 'checkpoints' / 'last.ckpt'}" in done.stdout
        assert json.loads((out / "controlnet" / "g4seg_finetune.json").read_text())["losses"]["steps"] == 6
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- NaN weights ----------------------------------------------------------------------------------


def test_a_segrefiner_with_nan_weights_stops_the_run_in_one_line(tmp_path):
    from g4seg.models.segrefiner import TINY_CONFIG, DenoiseUNet

    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in DenoiseUNet(TINY_CONFIG).state_dict().items()}  # fmt: skip
    weights = tmp_path / "nan.pth"
    torch.save({"state_dict": {"denoise_model." + k: v for k, v in state.items()}}, weights)
    refiner = json.dumps([{"name": "segrefiner", "refiners": [{"class_path": "strategies.refiners.SegRefiner", "init_args": {
        "weights": str(weights), "model_channels": 32, "channel_mult": [1, 1, 1, 2], "num_res_blocks": 1,
        "attention_strides": [8], "num_heads": 2, "model_size": 16}}]}])  # fmt: skip
    from helpers import cli

    code, _, err = cli("predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2",
                       "--model.strategies", refiner, "--scoring.bootstrap", "0", "--output_dir", str(tmp_path / "run"))  # fmt: skip
    line = error_line(code, err)
    assert line.startswith(f"g4seg: error: SegRefiner (weights: {weights}) produced NaN or infinite probabilities "
                           "on sample '2007_000032'")  # fmt: skip


def test_a_producer_with_nan_weights_stops_the_run_in_one_line(tmp_path):
    from helpers import cli
    from datamodules.hf_segmenter import TINY_LABELS
    from g4seg.models.tiny import tiny_segmenter

    net, processor = tiny_segmenter("tiny-segformer", TINY_LABELS)
    with torch.no_grad():
        net.decode_head.classifier.weight.fill_(float("nan"))
    net.save_pretrained(tmp_path / "nan")
    processor.save_pretrained(tmp_path / "nan")
    coarse = json.dumps({"class_path": "datamodules.HFSegmenter", "init_args": {"model": str(tmp_path / "nan")}})
    code, _, err = cli("predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2",
                       "--data.init_args.coarse", coarse, "--scoring.bootstrap", "0", "--output_dir", str(tmp_path / "run"))  # fmt: skip
    assert error_line(code, err).startswith(f"g4seg: error: HFSegmenter (model: {tmp_path / 'nan'}) produced NaN or "
                                            "infinite coarse probabilities on sample")  # fmt: skip


def test_an_injector_with_nan_weights_names_itself(real_voc):
    from datamodules import VOCFolderDataModule
    from g4seg.finite import NonFiniteOutput
    from strategies.injectors import NoInjection

    dm = VOCFolderDataModule(str(real_voc), limit=2)
    dm.setup()
    samples = [dm.dataset[i] for i in range(2)]
    inj = NoInjection(model="tiny")
    inj.vae = copy.deepcopy(inj.vae)  # its own copy: the tiny model is shared in this process
    with torch.no_grad():
        inj.vae.decoder.conv_out.bias[0] = float("nan")
    with pytest.raises(NonFiniteOutput, match=f"NoInjection \\(model: tiny\\) produced NaN or infinite images on sample '{samples[0].id}'"):
        inj.generate(samples)
