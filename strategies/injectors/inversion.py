"""Deterministic starting latents for the one-step regeneration (the paper's Table IV).

`ddim`: DDIM inversion of the image latent from t = 0 up to t_s in `steps` equal steps,
with the conditional prompt and no guidance, as Null-text inversion (Mokady et al., 2023)
does; each step is diffusers' `DDIMInverseScheduler.step` (the UNet called with the target
timestep on the current latent, its output read at the current noise level,
x_next = sqrt(a_next) x0_hat + sqrt(1 - a_next) eps).

`null_text`: then optimises the unconditional text embedding so that the guided
prediction reproduces the original latent. Mokady et al. optimise one embedding per
denoising step so that each guided DDIM step lands on the inversion trajectory; G4Seg's
generation is a single step from t_s straight to 0, whose target on that trajectory is
the original latent itself, so there is one embedding per (image, class) to fit, with
their inner loop: Adam (lr 1e-2), at most `iterations` updates, stop when the loss falls
below `epsilon` (their 1e-5 at the first step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from g4seg.errors import ConfigError

ModelOutput = Callable[[torch.Tensor, int], torch.Tensor]  # (latents, timestep) -> UNet output


def eps_and_x0(out: torch.Tensor, x: torch.Tensor, alpha_bar: float, prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from a model output at noise level alpha_bar, for the usual parameterisations."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        return out, (x - s * out) / a
    if prediction_type == "v_prediction":
        return a * out + s * x, a * x - s * out
    if prediction_type == "sample":
        return (x - a * out) / s, out
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def inversion_timesteps(timestep: int, steps: int) -> list[int]:
    if steps < 1 or timestep % steps:
        raise ConfigError(f"inversion_steps must divide the timestep {timestep} (got {steps})")
    gap = timestep // steps
    return [gap * (i + 1) for i in range(steps)]


def ddim_invert(model_output: ModelOutput, x0: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
                prediction_type: str) -> torch.Tensor:  # fmt: skip
    """Latent at timesteps[-1], reached from the clean latent x0 (taken to sit at t = 0)."""
    x, previous = x0, 0
    for t in timesteps:
        a_prev, a_next = float(alphas_cumprod[previous]), float(alphas_cumprod[t])
        # the output is read at the current latent's noise level, as DDIMInverseScheduler does
        eps, x0_hat = eps_and_x0(model_output(x, t), x, a_prev, prediction_type)
        x = math.sqrt(a_next) * x0_hat + math.sqrt(1.0 - a_next) * eps
        previous = t
    return x


def optimise_null_text(
    guided_x0: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    null: torch.Tensor,
    iterations: int = 10,
    lr: float = 1e-2,
    epsilon: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unconditional embeddings [J, L, D] fitted per job, and each job's last loss [J].

    `guided_x0(null)` is the one-step, guided x0 prediction for every job. The jobs are
    optimised together, but the result is what each would get alone: their losses are
    summed (Adam acts per element), and a job that reaches `epsilon` is frozen after that
    update, as Mokady et al. break out of the loop.
    """
    null = null.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([null], lr=lr)
    frozen = torch.zeros(len(null), dtype=torch.bool, device=null.device)
    losses = torch.full((len(null),), float("inf"), device=null.device)
    with torch.enable_grad():
        for _ in range(iterations):
            pred = guided_x0(null)
            per_job = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
            keep = null.detach().clone()
            optimizer.zero_grad()
            per_job.sum().backward()
            optimizer.step()
            with torch.no_grad():
                null[frozen] = keep[frozen]
                losses = torch.where(frozen, losses, per_job.detach())
                frozen |= per_job.detach() < epsilon
            if bool(frozen.all()):
                break
    return null.detach(), losses
