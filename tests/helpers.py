"""What several test files share: paths, the CLI run in or out of the process, its one error
line, and small builders (tests import this module; conftest.py keeps the fixtures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "voc2012"
REAL = ROOT / "data" / "real" / "voc2012"  # all 16 real pairs, in the repository: no sibling folder needed


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "g4seg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"g4seg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def cli(*args: str) -> tuple[int, str, str]:
    """`g4seg ARGS` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from g4seg.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def error_line(code: int, err: str) -> str:
    """The one `g4seg: error...` line of a failed CLI call, asserting exit code 2 and no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("g4seg")]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def demo_with(tmp_path: Path, *names: str) -> str:
    """configs/demo.yaml with only the named strategies (and their injectors), for tests about
    one behaviour that need not pay for every refiner of the demo."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["model"]["strategies"] = [s for s in config["model"]["strategies"] if s["name"] in names]
    used = {s.get("injector") for s in config["model"]["strategies"]}
    config["model"]["injectors"] = {k: v for k, v in config["model"]["injectors"].items() if k in used}
    path = tmp_path / "demo_subset.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def finished_run(out, *args: str):
    """`g4seg ARGS --output_dir OUT`, in-process, asserting success; returns OUT."""
    code, _, err = cli(*args, "--output_dir", str(out))
    assert code == 0, err[-3000:]
    return out


CONTEXT_LABELS = np.array([[2, 284, 458], [3, 0, 113]], np.uint16)  # 459-label ids of one 2 x 3 annotation


def context_sources(tmp_path: Path, mat_key: str | None = "LabelMap") -> tuple[Path, Path]:
    """(VOC2010 folder with one image and its val split, trainval folder with its .mat, or
    none when `mat_key` is None), as the official distributions lay them out."""
    from PIL import Image
    from scipy.io import savemat

    voc = tmp_path / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(voc / "JPEGImages" / "2008_000002.jpg")
    trainval = tmp_path / "trainval"
    if mat_key is not None:
        trainval.mkdir()
        savemat(trainval / "2008_000002.mat", {mat_key: CONTEXT_LABELS})
    return voc, trainval


def sd3_step_from_pieces(inj, samples, unshifted_sigma: float):
    """(sigma after the scheduler's shift, x0, x0_hat) of a NoInjection on SD3 from diffusers' own
    pieces: VAE latents centred and scaled as SD3's img2img pipeline does, the scheduler's
    `scale_noise` and `step`, the transformer called as the pipeline calls it."""
    import cv2
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from strategies.injectors.jobs import noise_for

    models = inj.models_info
    jobs = inj.make_jobs(samples)
    r = inj.resolution
    images = np.stack([cv2.resize(s.image.numpy(), (r, r), interpolation=cv2.INTER_AREA) for s in samples])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    vae = models.vae
    with torch.no_grad():
        x0 = ((vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor)[jobs.sample_index]
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(models.scheduler.config)
        scheduler.set_timesteps(sigmas=[unshifted_sigma])
        t = scheduler.timesteps[0]
        noise = torch.stack([noise_for(sid, c, inj.seed, tuple(x0.shape[1:])) for sid, c in zip(jobs.sample_ids, jobs.class_ids)])
        x_t = scheduler.scale_noise(x0, t.expand(len(x0)), noise)
        embeds, _, pooled, _ = models.pipeline().encode_prompt(jobs.prompts, None, None, do_classifier_free_guidance=False)
        v = models.unet(hidden_states=x_t, timestep=t.expand(len(x0)), encoder_hidden_states=embeds,
                        pooled_projections=pooled).sample  # fmt: skip
        return float(scheduler.sigmas[0]), x0, scheduler.step(v, t, x_t).prev_sample
