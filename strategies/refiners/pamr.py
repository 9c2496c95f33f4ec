"""PAMR, pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020, visinf/1-stage-wseg,
Apache-2.0): the cheap training-free post-process the CLIP-segmenter literature runs
(SCLIP's `pamr_steps`, TCL, OVDiff), so that G4Seg can be held against it.

Written from the paper's equations and the released module's behaviour:
  * for every pixel i and every neighbour j of its 3 x 3 ring at each dilation d (8 per
    dilation, replicate padding at the border), the image affinity
        k(i, j) = - |I_i - I_j| / (1e-8 + 0.1 * sigma_i)
    per colour channel, sigma_i the (unbiased) standard deviation of the channel over i's
    ring *and* i itself at every dilation; averaged over the channels, then a softmax over
    the neighbours j;
  * each iteration replaces a pixel's class probabilities with the affinity-weighted mean of
    its neighbours' (the pixel itself is not among them): a convex combination, so the class
    probabilities of a pixel keep summing to 1.
The image is ImageNet-normalised as in 1-stage-wseg (the affinity does not depend on a
per-channel affine normalisation, up to the 1e-8). The probabilities are used at their own
resolution, the sample's, so no resize is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.types import ClassProbs, Generated, Sample

PRESETS = {"1-stage-wseg": (1, 2, 4, 8, 12, 24), "sclip": (8, 16)}  # dilations as released (SCLIP: pamr_stride)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RING = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def neighbours(x: torch.Tensor, dilations: tuple[int, ...], centre: bool = False) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, P, H, W]: each pixel's ring values at every dilation (with the
    pixel itself once per dilation when `centre`), replicate padding at the border."""
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        offsets = [(0, 0)] + RING if centre else RING
        out += [padded[..., d + dy * d: d + dy * d + h, d + dx * d: d + dx * d + w] for dy, dx in offsets]
    return torch.stack(out, dim=2)


def affinity(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """[1, 3, H, W] normalised image -> [1, 1, P, H, W] softmax weights over the neighbours."""
    sigma = neighbours(image, dilations, centre=True).std(dim=2, keepdim=True)
    diff = (image.unsqueeze(2) - neighbours(image, dilations)).abs()
    return F.softmax((-diff / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True), dim=2)


def pamr(image: torch.Tensor, probs: torch.Tensor, iterations: int, dilations: tuple[int, ...]) -> torch.Tensor:
    """PAMR of [1, K, H, W] probabilities guided by a [1, 3, H, W] normalised image."""
    weights = affinity(image, dilations)
    for _ in range(iterations):
        probs = (neighbours(probs, dilations) * weights).sum(dim=2)
    return probs


class PAMR(Refiner):
    """Args:
    iterations: propagation steps (10 in 1-stage-wseg and SCLIP).
    dilations: the rings' dilations; default: the preset's.
    preset: "1-stage-wseg" (1, 2, 4, 8, 12, 24) or "sclip" (its pamr_stride, 8 and 16).
    """

    def __init__(self, iterations: int = 10, dilations: list[int] | None = None, preset: str = "1-stage-wseg") -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ConfigError(f"PAMR preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
            raise ConfigError(f"PAMR iterations must be a whole number >= 1, got {iterations!r}")
        dilations = list(PRESETS[preset]) if dilations is None else list(dilations)
        if not dilations or any(isinstance(d, bool) or int(d) != d or d < 1 for d in dilations):
            raise ConfigError(f"PAMR dilations must be whole numbers >= 1, got {dilations!r}")
        self.iterations, self.dilations, self.preset = int(iterations), tuple(int(d) for d in dilations), preset
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def resolved(self) -> dict:
        return {**self.settings, "dilations": list(self.dilations)}

    @torch.no_grad()
    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        device = self.mean.device
        image = sample.image.to(device).permute(2, 0, 1)[None].float() / 255.0
        image = (image - self.mean) / self.std
        out = pamr(image, probs.probs.to(device)[None], self.iterations, self.dilations)[0]
        return probs.with_probs(out.cpu())
