"""One-step regeneration for flow-matching models (SD3, Flux), the counterpart of the DDPM
step G4Seg takes on Stable Diffusion.

G4Seg noises the image latent to t_s = 400 of 1000 and reads the clean estimate back in one
step. A rectified-flow model is trained on x_t = (1 - sigma) x0 + sigma * eps and predicts
the velocity v = eps - x0, so the estimate is x0_hat = x_t - sigma * v. The same t_s maps to
sigma = t_s / 1000 before the model's timestep shift (SD3: sigma' = s sigma / (1 + (s - 1)
sigma), shift s = 3; Flux: the exponential shift exp(mu) / (exp(mu) + 1 / sigma - 1), mu from
the image's token count), as diffusers' `FlowMatchEulerDiscreteScheduler` shifts the sigmas
it is given; its `scale_noise` and `step` are the tests' oracle.

That is `noise: paper`, what diffusers' img2img pipelines do at strength t_s / 1000; it
leaves the flow models far noisier than SD at the same t_s (SD3: sigma 0.667, a signal-to-
noise ratio ((1 - sigma) / sigma)^2 of 0.25, against 0.74 for SD's DDPM at t = 400). The paper
never ran them, so `noise: matched_snr` offers the sigma of SD's SNR at t_s instead (0.538 at
400), the like-for-like noise level for Table IX's comparison of backbones.
"""

from __future__ import annotations

import math

import torch


def flow_sigma(timestep: int, num_train_timesteps: int = 1000, shift: float = 1.0, mu: float | None = None) -> float:
    """The noise level of G4Seg's t_s for a flow-matching model: t_s / N, then the model's
    static shift, or the exponential dynamic shift when `mu` is given."""
    sigma = timestep / num_train_timesteps
    if not 0.0 < sigma < 1.0:
        raise ValueError(f"timestep must lie in (0, {num_train_timesteps}), got {timestep}")
    if mu is not None:
        return math.exp(mu) / (math.exp(mu) + (1.0 / sigma - 1.0))
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


NOISE_LEVELS = ("paper", "matched_snr")
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}  # SD 1.x / 2.x's DDPM


def matched_snr_sigma(timestep: int, num_train_timesteps: int = 1000) -> float:
    """The flow sigma whose x_t has the signal-to-noise ratio of SD's DDPM x_t at t_s:
    ((1 - sigma) / sigma)^2 = alpha_bar / (1 - alpha_bar)."""
    from diffusers import DDPMScheduler

    alpha_bar = float(DDPMScheduler(num_train_timesteps=num_train_timesteps, **SD_BETAS).alphas_cumprod[timestep])
    return math.sqrt(1.0 - alpha_bar) / (math.sqrt(alpha_bar) + math.sqrt(1.0 - alpha_bar))


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * noise


def x0_from_velocity(x_t: torch.Tensor, velocity: torch.Tensor, sigma: float) -> torch.Tensor:
    return x_t - sigma * velocity


FLUX_T5_LENGTH = 512  # Flux's max_sequence_length (its pipeline's default)
SD3_T5_LENGTH = 256  # SD3's (its pipeline's default)


def step_sigma(models, timestep: int, resolution: int, noise: str = "paper") -> float:
    """G4Seg's t_s as the model's scheduler shifts it: SD3's static shift, or Flux's
    exponential shift with mu from the packed image's token count (its pipeline's rule);
    with `noise: matched_snr`, SD's signal-to-noise ratio at t_s instead."""
    config = models.scheduler.config
    if noise == "matched_snr":
        return matched_snr_sigma(timestep, config.num_train_timesteps)
    if not config.use_dynamic_shifting:
        return flow_sigma(timestep, config.num_train_timesteps, float(config.shift))
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    tokens = (resolution // models.vae_scale // 2) ** 2
    mu = calculate_shift(tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    return flow_sigma(timestep, config.num_train_timesteps, mu=mu)


def flow_prompts(models, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, dict]:
    """Text sequence [P, L, D] and pooled vectors by the model's own pipeline: SD3's
    `encode_prompt` (CLIP-L and CLIP-G side by side, T5 after them, zeros without T5) or
    Flux's (T5's sequence, CLIP's pooled vector)."""
    pipe = models.pipeline()
    if models.is_flux:
        embeds, pooled, _ = pipe.encode_prompt(prompts, None, device=device, max_sequence_length=FLUX_T5_LENGTH)
    else:
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=device, do_classifier_free_guidance=False)
    return embeds, {"pooled_projections": pooled}


def velocity(models, x: torch.Tensor, sigma: float, text: torch.Tensor, added: dict, guidance: float,
             kwargs: dict) -> torch.Tensor:  # fmt: skip
    """The transformer's velocity [J, C, h, w] at `sigma`, called as each pipeline calls it:
    SD3 reads sigma x 1000; Flux reads sigma, its latents packed in 2 x 2 patches with their
    position ids, and the guidance embedding of Flux-dev."""
    net = models.unet
    dtype = net.dtype
    n = len(x)
    pooled = added["pooled_projections"].to(dtype)
    if not models.is_flux:
        t = torch.full((n,), sigma * models.scheduler.config.num_train_timesteps, device=x.device)
        return net(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=text.to(dtype),
                   pooled_projections=pooled, **kwargs).sample.float()  # fmt: skip
    pipe = models.pipeline()
    _, c, h, w = x.shape
    packed = pipe._pack_latents(x.to(dtype), n, c, h, w)
    image_ids = pipe._prepare_latent_image_ids(n, h // 2, w // 2, x.device, dtype)
    text_ids = torch.zeros(text.shape[1], 3, device=x.device, dtype=dtype)
    g = torch.full((n,), guidance, device=x.device, dtype=torch.float32) if net.config.guidance_embeds else None
    out = net(hidden_states=packed, timestep=torch.full((n,), sigma, device=x.device, dtype=dtype), guidance=g,
              pooled_projections=pooled, encoder_hidden_states=text.to(dtype), txt_ids=text_ids, img_ids=image_ids,
              **kwargs).sample  # fmt: skip
    return pipe._unpack_latents(out, h * models.vae_scale, w * models.vae_scale, models.vae_scale).float()
