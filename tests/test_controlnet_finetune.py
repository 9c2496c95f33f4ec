"""ControlNet fine-tuning (scripts/finetune_controlnet.py) on tiny random models and the bundled
images: the loss falls, the folder it writes drives the injector through its real loader and
a Table VIII run, DDP on 2 processes gives the weights of 1 process, and user mistakes end
in one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import DEMO, ROOT, cli, read_metrics
from safetensors.torch import load_file

from datamodules import VOCFolderDataModule
from g4seg.errors import ConfigError, DataError
from strategies.injectors.controlnet_training.cli import main as finetune

TINY = ["--config", str(ROOT / "configs" / "finetune" / "tiny.yaml")]


def curve(out: Path) -> tuple[list[float], list[tuple[int, float]]]:
    rows = list(csv.DictReader((out / "logs" / "metrics.csv").open()))
    train = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    return train, val


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """30 steps on 4 bundled images (2 more held out), as the tiny config says."""
    out = tmp_path_factory.mktemp("ft")
    result = finetune([*TINY, "--output_dir", str(out), "--data.limit", "6", "--trainer.enable_progress_bar", "false"])
    assert result["steps"] == 30
    return out


def test_the_loss_falls_and_the_folder_says_what_trained_it(finetuned):
    train, val = curve(finetuned)
    print(f"validation loss (2 held-out images, fixed noise) by step: {val}; "
          f"train loss, mean of steps 1-10 {np.mean(train[:10]):.4f} -> 21-30 {np.mean(train[-10:]):.4f}")
    assert len(train) == 30 and [s for s, _ in val][0] == 0 and len(val) == 4
    assert val[-1][1] < val[0][1] and np.mean(train[-10:]) < np.mean(train[:10])
    info = json.loads((finetuned / "controlnet" / "g4seg_finetune.json").read_text())
    assert info["steps"] == 30 and info["initial_controlnet"] == "from the UNet" and info["global_batch"] == 4
    assert len(info["data"]["train_ids"]) == 4 and len(info["data"]["val_ids"]) == 2
    assert not set(info["data"]["train_ids"]) & set(info["data"]["val_ids"])
    assert {p.name for p in (finetuned / "checkpoints").iterdir()} >= {"last.ckpt", "step=30.ckpt"}
    state = torch.load(finetuned / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state and all(k.startswith("controlnet.") for k in state)  # frozen models are not copied into checkpoints


def test_examples_are_painted_and_prompted_as_the_injector_makes_its_jobs():
    """With a coarse mask equal to the ground truth, the injector's jobs are the training examples."""
    import cv2

    from g4seg.types import ClassProbs
    from strategies.injectors import ControlNetInjection
    from strategies.injectors.controlnet import class_colours, condition_image
    from strategies.injectors.controlnet_training import ControlNetTrainingData

    data = ControlNetTrainingData(str(DEMO), limit=1, val_count=0, resolution=128, num_workers=0)
    data.setup()
    examples = {e["prompt"]: e for e in (data.train[i] for i in range(len(data.train.examples)))}
    dm = VOCFolderDataModule(str(DEMO), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    classes = [0, *sorted(int(c) for c in np.unique(sample.gt.numpy()) if c not in (0, 255))]
    probs = torch.stack([(sample.gt == c).float() for c in classes])
    sample.coarse = ClassProbs(torch.tensor(classes), probs)
    jobs = ControlNetInjection(resolution=128).make_jobs([sample])
    assert len(classes) > 2 and sorted(examples) == sorted(jobs.prompts)
    for j, prompt in enumerate(jobs.prompts):
        expected = condition_image(jobs.masks[j:j + 1], class_colours([jobs.names[j]]))[0]
        assert torch.equal(examples[prompt]["conditioning"], expected)
    resized = cv2.resize(sample.image.numpy(), (128, 128), interpolation=cv2.INTER_AREA)  # as encode_images
    want = torch.from_numpy(resized).permute(2, 0, 1).float() / 127.5 - 1.0
    assert all(torch.equal(e["pixel_values"], want) for e in examples.values())


def test_the_folder_drives_the_injector_and_a_table_viii_run(finetuned, tmp_path):
    from diffusers import ControlNetModel

    from g4seg.models.diffusion import load_diffusion
    from strategies.injectors import ControlNetInjection

    dm = VOCFolderDataModule(str(DEMO), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    start = tmp_path / "start"  # where the fine-tuning began: the tiny UNet's zero-initialised ControlNet
    ControlNetModel.from_unet(load_diffusion("tiny").unet).save_pretrained(start)
    before = ControlNetInjection(controlnet=str(start)).generate([sample])[0].images
    after = ControlNetInjection(controlnet=str(finetuned / "controlnet")).generate([sample])[0].images
    change = (after.float() - before.float()).abs().mean().item()
    print(f"generated images, fine-tuned vs initial ControlNet: mean |difference| {change:.2f} grey levels")
    assert change > 0.5

    tiny = yaml.safe_load((ROOT / "configs" / "paper" / "tiny" / "table8_injection.yaml").read_text())
    tiny["model"]["injectors"]["controlnet_finetuned"]["init_args"]["controlnet"] = str(finetuned / "controlnet")
    config = tmp_path / "table8.yaml"
    config.write_text(yaml.safe_dump(tiny))
    code, _, err = cli("predict", "--config", str(config), "--data.init_args.limit", "2", "--output_dir", str(tmp_path / "run"))
    assert code == 0, err[-3000:]
    assert "controlnet_finetuned" in read_metrics(tmp_path / "run")["strategies"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    recorded = json.dumps(run)
    assert str(finetuned / "controlnet") in recorded and '"controlnet_finetune"' in recorded and '"steps": 30' in recorded


def test_two_processes_and_a_resume_give_the_weights_of_one_run(tmp_path):
    """Same global batch (4 = 1 x 4 = 2 x 2), 3 steps, lr 1e-3: the ControlNets agree to float
    rounding (the gradient is averaged across processes instead of within one batch). A run
    stopped after 2 steps and resumed from its checkpoint ends with the same weights, exactly."""
    args = [*TINY, "--data.limit", "4", "--data.val_count", "0", "--trainer.max_steps", "3", "--model.learning_rate",
            "1e-3", "--checkpoint_every", "1000", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    finetune([*args, "--output_dir", str(tmp_path / "one")])
    # stopped after 2 steps and resumed from its checkpoint: the weights of the 3 steps in one go
    finetune([*args, "--output_dir", str(tmp_path / "resumed"), "--trainer.max_steps", "2", "--checkpoint_every", "2"])
    finetune([*args, "--output_dir", str(tmp_path / "resumed"), "--ckpt_path", "last"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "scripts/finetune_controlnet.py", *args, "--output_dir", str(tmp_path / "two"),
                           "--data.batch_size", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(tmp_path / "one" / "controlnet" / "diffusion_pytorch_model.safetensors")
    two = load_file(tmp_path / "two" / "controlnet" / "diffusion_pytorch_model.safetensors")
    # the ControlNet's output convolutions start at zero (from_unet): how far training moved them
    moved = max(v.abs().max().item() for k, v in one.items() if k.startswith(("controlnet_down_blocks", "controlnet_mid_block")))
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    info = json.loads((tmp_path / "two" / "controlnet" / "g4seg_finetune.json").read_text())
    resumed = load_file(tmp_path / "resumed" / "controlnet" / "diffusion_pytorch_model.safetensors")
    after_resume = max((one[k] - resumed[k]).abs().max().item() for k in one)
    print(f"ControlNet weights after 3 steps: moved by up to {moved:.2e}; 1 vs 2 processes: max |difference| {worst:.2e}; "
          f"2 steps + resume vs 3: {after_resume:.2e}")
    assert (tmp_path / "resumed" / "logs" / "metrics.csv").is_file() and (tmp_path / "resumed" / "logs" / "resumed-1" / "metrics.csv").is_file()
    assert after_resume == 0.0
    assert info["processes"] == 2 and info["global_batch"] == 4
    assert moved > 1e-3 and worst < 1e-4  # measured 9e-6; one Adam step moves a weight by up to lr = 1e-3


def test_mistakes_end_in_one_line(tmp_path):
    from diffusers import ControlNetModel

    other = tmp_path / "other"
    ControlNetModel(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
                    attention_head_dim=8, conditioning_embedding_out_channels=(8, 16)).save_pretrained(other)  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--data.root", str(empty)], DataError, r"/empty/SegmentationClass: ground-truth folder is missing"),
             (["--data.classes", "vocx"], ConfigError, r"^unknown class preset 'vocx'"),
             (["--model.controlnet", str(other)], ConfigError, r"other: a ControlNet of another architecture \(block_out_channels")]  # fmt: skip
    for i, (extra, kind, message) in enumerate(cases):
        with pytest.raises(kind, match=message) as caught:
            finetune([*TINY, *extra, "--output_dir", str(tmp_path / str(i))])
        assert "\n" not in str(caught.value)


def test_sigterm_saves_the_step_and_the_run_resumes(tmp_path):
    """What a scheduler's time limit does: the step in flight ends, its state is saved as
    last.ckpt, the exit code is 128 + 15 with one line; the same command with --ckpt_path last
    goes on from there."""
    import signal
    import time

    out = tmp_path / "run"
    args = [*TINY, "--data.limit", "4", "--data.val_count", "0", "--checkpoint_every", "2", "--output_dir", str(out),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "scripts/finetune_controlnet.py", *args, "--trainer.max_steps", "1000"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step=2.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("g4seg:")]
    assert len(lines) == 1 and lines[0].startswith("g4seg: SIGTERM: stopped after step "), stdout[-2000:]
    stopped = int(lines[0].split("step ")[1].split(",")[0])
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert stopped >= 2 and saved["global_step"] == stopped and not (out / "controlnet").exists()
    result = finetune([*args, "--trainer.max_steps", str(stopped + 2), "--ckpt_path", "last"])
    assert result["steps"] == stopped + 2 and (out / "controlnet" / "g4seg_finetune.json").is_file()
    # the same command again resumes by itself; other settings are refused, not mixed into it
    assert finetune([*args, "--trainer.max_steps", str(stopped + 3)])["steps"] == stopped + 3
    with pytest.raises(ConfigError, match=r"other settings \(model.learning_rate: 0.0001 -> 0.001\)") as caught:
        finetune([*args, "--trainer.max_steps", str(stopped + 4), "--model.learning_rate", "1e-3"])
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"data.global_batch: 4 -> 2.*data.train_ids"):
        finetune([*args, "--trainer.max_steps", str(stopped + 4), "--data.batch_size", "2", "--data.limit", "3"])


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "finetune").glob("controlnet_*.yaml")), ids=lambda p: p.stem)
def test_real_configs_parse_and_name_the_missing_model(config, tmp_path, capsys):
    from g4seg.errors import ModelNotFoundError

    with pytest.raises(SystemExit) as done:
        finetune(["--config", str(config), "--print_config"])
    assert done.value.code in (0, None) and "max_steps: 20000" in capsys.readouterr().out
    with pytest.raises(ModelNotFoundError, match="^/models/stable-diffusion-v1-5: the diffusion model folder does not exist") as caught:
        finetune(["--config", str(config), "--output_dir", str(tmp_path / "o")])
    # every missing folder at once, each with what to get, before anything loads
    firsts = [line for line in str(caught.value).splitlines() if line.startswith("/")]
    assert [line.split(":")[0] for line in firsts][:2] == ["/models/stable-diffusion-v1-5", "/models/control_v11p_sd15_seg"]
    assert len(firsts) == 3 and firsts[2].startswith("/data/") and "hf download stable-diffusion-v1-5" in str(caught.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model", ["tiny", "tiny-v"])
def test_the_loss_is_the_ddpm_objective_written_out(model):
    """diffusion_loss against the DDPM equations by hand (x_t = sqrt(a) x0 + sqrt(1 - a) eps;
    target eps, or v = sqrt(a) eps - sqrt(1 - a) x0), with the draws each example's seed gives."""
    from g4seg.seeding import stable_seed
    from strategies.injectors.controlnet_training import ControlNetFineTuning, ControlNetTrainingData
    from strategies.injectors.controlnet_training.examples import collate

    data = ControlNetTrainingData(str(DEMO), limit=2, val_count=0, resolution=128, num_workers=0)
    data.setup()
    batch = collate([data.train[i] for i in range(3)])
    torch.manual_seed(0)
    module = ControlNetFineTuning(model=model, controlnet="tiny", seed=5)
    with torch.no_grad():
        got = module.diffusion_loss(batch, draw=7)
        m, sched = module.models_info, module.models_info.scheduler
        losses = []
        for i, key in enumerate(batch["key"]):
            g = torch.Generator().manual_seed(stable_seed(5, key, 7) % 2**63)
            dist = module.vae.encode(batch["pixel_values"][i:i + 1]).latent_dist
            x0 = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)) * module.vae.config.scaling_factor
            eps = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, 1000, (1,), generator=g)
            a = sched.alphas_cumprod[t].float()
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            ids = m.tokenizer([batch["prompt"][i]], padding="max_length", max_length=m.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids  # fmt: skip
            text = module.text_encoder(ids)[0]
            down, mid = module.controlnet(x_t, t, encoder_hidden_states=text,
                                          controlnet_cond=batch["conditioning"][i:i + 1], return_dict=False)  # fmt: skip
            pred = module.unet(x_t, t, encoder_hidden_states=text, down_block_additional_residuals=list(down),
                               mid_block_additional_residual=mid).sample  # fmt: skip
            target = eps if model == "tiny" else a.sqrt() * eps - (1 - a).sqrt() * x0
            losses.append(((pred - target) ** 2).mean())
    expected = torch.stack(losses).mean()
    print(f"{model}: loss {got.item():.6f}, written out {expected.item():.6f}")
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
