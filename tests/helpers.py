"""Builders several test files share (tests import this, not conftest, for them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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

    from strategies.injectors.generation import noise_for

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
