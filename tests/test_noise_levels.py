"""The flow models' noise level (`noise: paper | matched_snr`) and the VAE latent
(`vae_latent: mean | sample`), against the equations and diffusers' own pieces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

from datamodules import VOCFolderDataModule
from g4seg.errors import ConfigError
from g4seg.seeding import stable_seed
from strategies.injectors import NoInjection
from strategies.injectors.flow_matching import matched_snr_sigma
from helpers import sd3_step_from_pieces


@pytest.fixture(scope="module")
def samples(real_voc):
    dm = VOCFolderDataModule(str(real_voc), limit=2)
    dm.setup()
    return [dm.dataset[i] for i in range(2)]


def ldm_alpha_bar(t: int) -> float:
    """SD's schedule as the LDM code writes it: betas linear in sqrt from 0.00085 to 0.012."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return float(np.cumprod(1.0 - betas)[t])


def test_matched_snr_sigma_solves_the_snr_equation():
    ab = ldm_alpha_bar(400)
    lo, hi = 1e-6, 1 - 1e-6  # ((1 - s) / s)^2 falls with s: bisect for SD's SNR
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ((1 - mid) / mid) ** 2 > ab / (1 - ab) else (lo, mid)
    assert matched_snr_sigma(400) == pytest.approx(lo, abs=1e-6) and round(lo, 3) == 0.538
    assert ab / (1 - ab) == pytest.approx(0.7376, abs=1e-4)


def test_sd3_paper_and_matched_snr_noise_levels_are_its_schedulers(samples):
    paper = NoInjection(model="tiny-sd3")
    matched = NoInjection(model="tiny-sd3", noise="matched_snr")
    shift = float(paper.models_info.scheduler.config.shift)
    sigma, _, _ = sd3_step_from_pieces(paper, samples[:1], 0.4)
    assert paper.resolved()["sigma"] == pytest.approx(sigma) == pytest.approx(2 / 3)  # shift 3 of 0.4
    target = matched_snr_sigma(400)
    unshifted = target / (shift - (shift - 1) * target)  # what the scheduler must be given to land there
    sigma, _, expected = sd3_step_from_pieces(matched, samples, unshifted)
    assert matched.resolved()["sigma"] == pytest.approx(sigma) == pytest.approx(target)
    _, x0_hat = matched.reconstruct(samples)
    torch.testing.assert_close(x0_hat, expected, atol=1e-5, rtol=1e-4)


def test_matched_snr_is_refused_where_ddpm_is_the_reference():
    with pytest.raises(ConfigError, match="flow-matching"):
        NoInjection(model="tiny", noise="matched_snr")
    with pytest.raises(ConfigError, match="noise must be one of"):
        NoInjection(model="tiny-sd3", noise="snr")


@pytest.mark.parametrize("model", ["tiny", "tiny-sd3"])
def test_vae_sample_is_diffusers_retrieve_latents_with_the_images_generator(model, samples):
    inj = NoInjection(model=model, vae_latent="sample", seed=3)
    mean = NoInjection(model=model)
    vae = inj.models_info.vae
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    got = inj.encode_images(samples)
    for i, sample in enumerate(samples):
        r = inj.resolution
        x = torch.from_numpy(cv2.resize(sample.image.numpy(), (r, r), interpolation=cv2.INTER_AREA))
        x = x.permute(2, 0, 1)[None].float() / 127.5 - 1.0
        generator = torch.Generator().manual_seed(stable_seed("noise", 3, sample.id, -1) % (2**63))
        with torch.no_grad():
            want = (retrieve_latents(vae.encode(x), generator=generator, sample_mode="sample") - shift) * vae.config.scaling_factor
        torch.testing.assert_close(got[i : i + 1], want, atol=2e-4, rtol=1e-4)  # batch of 2 vs 1 in the convolutions
    assert not torch.allclose(got, mean.encode_images(samples))
