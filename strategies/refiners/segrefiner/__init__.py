"""SegRefiner (Wang et al., NeurIPS 2023) as a refiner: the other diffusion-based mask refiner
of G4Seg's Table XI. Unlike G4Seg it is trained, and it diffuses the mask itself (a discrete
coarse -> fine transition, `diffusion.py`) with a U-Net that sees the image and the mask
(`g4seg/models/segrefiner.py`), in the release's semantic procedure (`semantic.py`).
"""

from __future__ import annotations

import torch

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.models.segrefiner import SEGREFINER_GET, UNetConfig, shared_network
from g4seg.precision import autocast, check_precision
from g4seg.seeding import stable_seed
from g4seg.types import ClassProbs, Generated, Sample

from .diffusion import Schedule
from .semantic import MIN_PIXELS, TestConfig, refine_semantic

MEAN = (123.675, 116.28, 103.53)  # the release's img_norm_cfg (RGB, 0-255)
STD = (58.395, 57.12, 57.375)

__all__ = ["SegRefiner"]


class SegRefiner(Refiner):
    """Each foreground class's current mask (argmax) refined as one binary mask; the class's
    probability becomes the refined soft mask (>= 0.5 exactly where the release's binary mask
    is 1: the windows' averaged sigmoid, elsewhere the global step's sigmoid), background
    1 - the maximum of the classes (just below 0.5 where that maximum is exactly 0.5, which the
    release counts as foreground), so overlaps go to the more confident class.

    Args:
        weights: "tiny" (random, offline), the released checkpoint (segrefiner_hr_latest.pth
            for semantic refinement, as its BIG/DIS evaluation; segrefiner_lr_latest.pth) or
            a .safetensors conversion (`g4seg.models.segrefiner.save_safetensors`).
        model_size, fine_prob_thr, iou_thr, batch_max: the release's test_cfg for semantic
            refinement (configs/segrefiner/segrefiner_big.py: 256, 0.9, 0.3, 32; its code's
            fallback for iou_thr is 0.2).
        timesteps, beta_start, beta_stop: the linear beta_cumprod schedule (6, 0.8, 0).
        model_channels, channel_mult, num_res_blocks, attention_strides, num_heads,
            learn_time_embd: the network (released: 128, [1, 1, 2, 2, 4, 4], 2, [16, 32], 4,
            true); ignored for "tiny".
        seed: the transition noise of each (image, class) comes from (seed, image id, class).
        precision: autocast of the network, "fp32" (as released), "bf16", "fp16" or "auto".
    """

    FILES_NEEDED = {"weights": f"the SegRefiner checkpoint: {SEGREFINER_GET}"}

    def __init__(self, weights: str = "tiny", model_size: int = 256, fine_prob_thr: float = 0.9,
                 iou_thr: float = 0.3, batch_max: int = 32, timesteps: int = 6, beta_start: float = 0.8,
                 beta_stop: float = 0.0, model_channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4), num_res_blocks: int = 2,
                 attention_strides: tuple[int, ...] = (16, 32), num_heads: int = 4, learn_time_embd: bool = True,
                 seed: int = 0, precision: str = "fp32") -> None:  # fmt: skip
        super().__init__()
        self.precision = check_precision("SegRefiner", precision)
        if timesteps < 2:
            raise ConfigError(f"SegRefiner timesteps must be >= 2 (a global and a local step), got {timesteps}")
        if not 0 < fine_prob_thr <= 1 or not 0 <= iou_thr <= 1 or batch_max < 1:
            raise ConfigError(f"SegRefiner needs 0 < fine_prob_thr <= 1, 0 <= iou_thr <= 1, batch_max >= 1; "
                              f"got {fine_prob_thr}, {iou_thr}, {batch_max}")  # fmt: skip
        config = UNetConfig(model_channels, tuple(channel_mult), num_res_blocks, tuple(attention_strides), num_heads,
                            learn_time_embd, timesteps)  # fmt: skip
        self.random_weights = weights == "tiny"
        self.net = shared_network(weights, config)
        stride = self.net.config.stride
        if model_size % stride:
            raise ConfigError(f"SegRefiner model_size must be a multiple of {stride} (the U-Net's downsampling), got {model_size}")
        if self.net.config.num_timesteps != timesteps and self.net.config.learn_time_embd:
            raise ConfigError(f"SegRefiner timesteps ({timesteps}) must match the network's learned embedding "
                              f"({self.net.config.num_timesteps} steps)")  # fmt: skip
        self.schedule = Schedule.linear(beta_start, beta_stop, timesteps)
        self.test_cfg = TestConfig(model_size, fine_prob_thr, iou_thr, batch_max)
        self.seed = seed

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        labels = probs.labels()
        fg = [(k, c) for k, c in probs.foreground() if bool((labels == c).any())]
        if not fg:
            return probs.with_probs(probs.probs, "no update (no class region to refine)")
        device = next(self.net.parameters()).device
        mean = torch.tensor(MEAN, device=device).view(3, 1, 1)
        std = torch.tensor(STD, device=device).view(3, 1, 1)
        image = (sample.image.to(device).permute(2, 0, 1).float() - mean) / std
        masks = torch.stack([labels == c for _, c in fg])
        generators = [torch.Generator().manual_seed(stable_seed(self.seed, sample.id, c) % 2**63) for _, c in fg]
        with torch.no_grad(), autocast(self.precision, device):
            refined, emptied = refine_semantic(self.net, self.schedule, self.test_cfg, image, masks, generators)
        out = probs.probs.clone()
        for (k, _), p in zip(fg, refined):
            out[k] = p
        top = out[1:].max(0).values
        # a class at exactly 0.5 is foreground in the release (>= 0.5): background just below it, not tied
        out[0] = torch.where(top == 0.5, torch.nextafter(top, torch.zeros_like(top)), 1.0 - top)
        note = f"class regions of at most {MIN_PIXELS} px removed (SegRefiner's early exit)" if emptied else None
        return probs.with_probs(out, note)
