"""One-step regeneration for flow-matching models (SD3, Flux), the counterpart of the DDPM
step G4Seg takes on Stable Diffusion.

G4Seg noises the image latent to t_s = 400 of 1000 and reads the clean estimate back in one
step. A rectified-flow model is trained on x_t = (1 - sigma) x0 + sigma * eps and predicts
the velocity v = eps - x0, so the estimate is x0_hat = x_t - sigma * v. The same t_s maps to
sigma = t_s / 1000 before the model's timestep shift (SD3: sigma' = s sigma / (1 + (s - 1)
sigma), shift s = 3; Flux: the exponential shift exp(mu) / (exp(mu) + 1 / sigma - 1), mu from
the image's token count), as diffusers' `FlowMatchEulerDiscreteScheduler` shifts the sigmas
it is given; its `scale_noise` and `step` are the tests' oracle.
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


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * noise


def x0_from_velocity(x_t: torch.Tensor, velocity: torch.Tensor, sigma: float) -> torch.Tensor:
    return x_t - sigma * velocity


def sd3_prompts(pipeline, unique: list[str], prompts: list[str], device: torch.device) -> tuple[torch.Tensor, dict]:
    """SD3's text embeddings [J, 77 + T5 length, D] and pooled embeddings, by diffusers' own
    `encode_prompt` (CLIP-L and CLIP-G side by side, T5 after them, zeros without T5)."""
    embeds, _, pooled, _ = pipeline.encode_prompt(unique, None, None, device=device, do_classifier_free_guidance=False)
    where = torch.tensor([unique.index(p) for p in prompts], device=embeds.device)
    return embeds[where], {"pooled_projections": pooled[where]}
