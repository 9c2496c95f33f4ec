"""SegRefiner's discrete "transition" diffusion on masks (`segrefiner_base.py` of the release).

The state of each pixel is either still coarse or already fine. beta_cumprod[t] (linear from
0.8 to 0 over 6 steps in the released configs) is the probability that a pixel has kept its
coarse value at step t. Each reverse step asks the network for the clean mask's logits; its
confidence 2|sigmoid - 1/2| turns into a probability of moving coarse -> fine

    p(c->f) = conf * (bc[t-1] - bc[t]) / (1 - conf * bc[t]),   fine += (1 - fine) * p(c->f)

and, except at the last step, each pixel takes the predicted value with probability `fine`
and the *original* coarse value otherwise. The last step returns sigmoid(logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from g4seg.models.segrefiner import DenoiseUNet


@dataclass(frozen=True)
class Schedule:
    betas_cumprod: tuple[float, ...]

    @classmethod
    def linear(cls, start: float = 0.8, stop: float = 0.0, num_timesteps: int = 6) -> Schedule:
        return cls(tuple(torch.linspace(start, stop, num_timesteps, dtype=torch.float64).tolist()))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas_cumprod)

    def prev(self, t: int) -> float:
        return 1.0 if t == 0 else self.betas_cumprod[t - 1]


def p_sample(net: DenoiseUNet, schedule: Schedule, image: torch.Tensor, x: torch.Tensor, fine: torch.Tensor,
             t: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(logits of the clean mask, updated fine probability) for masks x [N, 1, H, W] at step t."""
    logits = net(torch.cat((image, x), dim=1), torch.full((len(x),), t, dtype=torch.long, device=x.device)).float()
    conf = 2 * torch.abs(logits.sigmoid() - 0.5)
    bc, bc_prev = schedule.betas_cumprod[t], schedule.prev(t)
    to_fine = conf * (bc_prev - bc) / (1 - conf * bc)
    return logits, fine + (1 - fine) * to_fine


def p_sample_loop(net: DenoiseUNet, schedule: Schedule, image: torch.Tensor, x_last: torch.Tensor,
                  fine: torch.Tensor | None, steps: list[int],
                  generators: list[torch.Generator] | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(sigmoid of the last step's logits, fine probability) for a batch of masks [N, 1, H, W].

    The transition noise of mask i comes from generators[i] (CPU), so a mask's result does not
    depend on what else is in its batch or on which device runs it.
    """
    fine = torch.zeros_like(x_last) if fine is None else fine
    x = x_last
    for i, t in enumerate(steps):
        logits, fine = p_sample(net, schedule, image, x, fine, t)
        if i == len(steps) - 1:
            x = logits.sigmoid()
            break
        if generators is None:
            raise ValueError("steps before the last draw transition noise: pass one generator per mask")
        noise = torch.stack([torch.rand(x.shape[1:], generator=g) for g in generators]).to(x.device)
        take = (noise < fine).float()
        x = (logits >= 0).float() * take + x_last * (1 - take)
    return x, fine
