"""CascadePSP-style refiner: the network, its global/local inference and the Refiner."""

from __future__ import annotations

import torch

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.models.cascadepsp import CASCADEPSP_GET, shared_network
from g4seg.precision import check_precision
from g4seg.types import ClassProbs, Generated, Sample

from .inference import PAD, refine_masks


class CascadePSP(Refiner):
    """Each foreground class's current mask (argmax) refined by CascadePSP; the refined
    probabilities replace the class channels and background becomes 1 - max of them.

    Args:
        weights: "tiny" (random, offline), the official checkpoint file, or a checkpoint
            written by scripts/train_cascadepsp.py (a Lightning .ckpt or a state dict).
        L: max side of the global step and crop size of the local step (official 900).
        fast: global step only.
        base, layers: network size for non-official checkpoints (tiny: 8, [1, 1, 1, 1]).
        precision: autocast of the network, "fp32" (as released), "bf16", "fp16" or "auto"
            (`g4seg.precision`).
    """

    FILES_NEEDED = {"weights": f"the CascadePSP checkpoint: {CASCADEPSP_GET}"}

    def __init__(
        self,
        weights: str = "tiny",
        L: int = 900,
        fast: bool = False,
        base: int = 64,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.precision = check_precision("CascadePSP", precision)
        if not fast and L // 2 - 2 * PAD <= 0:
            raise ConfigError(f"CascadePSP L must exceed {4 * PAD} for the local step (or set fast: true), got L={L}")
        self.L, self.fast = L, fast
        self.random_weights = weights == "tiny"
        self.net = shared_network(weights, base, tuple(layers))

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        fg = probs.foreground()
        if not fg:
            return probs
        labels = probs.labels()
        masks = torch.stack([labels == c for _, c in fg])
        refined = refine_masks(self.net, sample.image, masks, self.L, self.fast, self.precision)
        out = probs.probs.clone()
        for (k, _), p in zip(fg, refined):
            out[k] = p
        out[0] = 1.0 - refined.max(0).values
        return probs.with_probs(out)


__all__ = ["CascadePSP", "refine_masks"]
