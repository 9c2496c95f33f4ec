"""SAM refiner: training-free refinement with Segment Anything prompted by the coarse mask,
the way SAMRefiner (Lin et al., ICLR 2025) prompts it (see `prompts.py` for what is matched).

Each foreground class's current mask (argmax) is split into connected components (merged as
the reference merges them); each component is refined as a binary mask: box + positive and
negative points + the Gaussian-weighted dense mask prompt, SAM's three outputs, the one with
the highest predicted IoU kept, its mask fed back as the next iteration's prompts
(`iterations` 5). A class's refined probability is the sigmoid of SAM's logits, the maximum
over its components; components under `min_area` pixels keep their coarse probability
(unrefined); background becomes 1 - the maximum of the classes, as with CascadePSP.
"""

from __future__ import annotations

import numpy as np
import torch

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.models.sam import SAM_GET, TINY, SharedSam, shared_sam
from g4seg.precision import autocast, check_precision
from g4seg.types import ClassProbs, Generated, Sample

from .prompts import DISTANCES, MIN_AREA, Prompt, components, make_prompt, mask_prompt

__all__ = ["SAMRefiner"]


class SAMRefiner(Refiner):
    """Args:
    model: "tiny" / "tiny-hq" / "tiny-sam2" (random, offline), a local folder of a
        `transformers` SAM, HQ-SAM or SAM 2 checkpoint (facebook/sam-vit-base, -large, -huge;
        syscv-community/sam-hq-vit-*; facebook/sam2.1-hiera-*) or a hub id in the local cache.
    iterations: prompt -> SAM -> mask rounds (reference 5).
    use_box, use_points, use_mask: which prompts (reference: all).
    add_neg: the negative point (reference: yes).
    gamma, strength: the dense prompt's Gaussian span and amplitude (reference 4, 30).
    min_area: components smaller than this (pixels), among several, are left unrefined
        (the reference drops < 5); a lone component is always refined, as there.
    distance: "fastgeodis" (the reference's raster transform, needs the FastGeodis package)
        or "exact" (OpenCV's exact Euclidean transform).
    precision: autocast of SAM's encoder and decoder, "fp32" (as released), "bf16", "fp16"
        or "auto" (`g4seg.precision`).
    """

    FILES_NEEDED = {"model": f"the SAM model: {SAM_GET}"}

    def __init__(self, model: str = "tiny", iterations: int = 5, use_box: bool = True, use_points: bool = True,
                 use_mask: bool = True, add_neg: bool = True, gamma: float = 4.0, strength: float = 30.0,
                 min_area: int = MIN_AREA, distance: str = "fastgeodis", precision: str = "fp32") -> None:  # fmt: skip
        super().__init__()
        self.precision = check_precision("SAMRefiner", precision)
        if distance not in DISTANCES:
            raise ConfigError(f"SAMRefiner distance must be one of {DISTANCES}, got {distance!r}")
        if distance == "fastgeodis":
            try:
                import FastGeodis  # noqa: F401
            except ImportError:
                raise ConfigError("SAMRefiner distance: fastgeodis needs the FastGeodis package (pip install "
                                  "--no-build-isolation FastGeodis); or set distance: exact") from None  # fmt: skip
        self.distance = distance
        if iterations < 1:
            raise ConfigError(f"SAMRefiner iterations must be >= 1, got {iterations}")
        if not (use_box or use_points or use_mask):
            raise ConfigError("SAMRefiner needs at least one prompt: use_box, use_points or use_mask")
        if gamma <= 0 or min_area < 1:
            raise ConfigError(f"SAMRefiner gamma must be > 0 and min_area >= 1, got {gamma} and {min_area}")
        self.iterations, self.use_box, self.use_points, self.use_mask = iterations, use_box, use_points, use_mask
        self.add_neg, self.gamma, self.strength, self.min_area = add_neg, gamma, strength, min_area
        self.random_weights = model in TINY
        self.shared: SharedSam = shared_sam(model)
        self.sam = self.shared.model  # a submodule, so Lightning moves it to the run's device

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        labels = probs.labels().numpy()
        jobs: list[tuple[int, np.ndarray]] = []
        small: dict[int, np.ndarray] = {}
        for k, c in probs.foreground():
            mask = labels == c
            if mask.any():  # an empty mask gives no prompt: the class stays as it is
                parts, small[k] = components(mask, self.min_area)
                jobs += [(k, m) for m in parts]
        if not jobs:  # say so: the strategy's row is the coarse mask on these samples
            return probs.with_probs(probs.probs, f"no update (no class region of at least {self.min_area} px to prompt SAM with)")
        refined = torch.sigmoid(self.segment(sample, [m for _, m in jobs]))
        out = probs.probs.clone()
        for k in sorted({k for k, _ in jobs}):
            channel = torch.stack([refined[j] for j, (kj, _) in enumerate(jobs) if kj == k]).max(0).values
            keep = torch.from_numpy(small[k])
            out[k] = torch.where(keep, torch.maximum(channel, probs.probs[k]), channel)
        out[0] = 1.0 - out[1:].max(0).values  # jobs exist, so there is a foreground channel
        unrefined = any(bool(m.any()) for m in small.values())
        return probs.with_probs(out, f"class regions under {self.min_area} px left unrefined" if unrefined else None)

    @torch.no_grad()
    def segment(self, sample: Sample, masks: list[np.ndarray]) -> torch.Tensor:
        """SAM's logits [J, H, W] for J binary masks of one image after the iterations."""
        image = sample.image.numpy()
        h, w = image.shape[:2]
        embedding, resized = self.shared.embed(sample.id, image, self.precision)
        logits = torch.zeros(len(masks), h, w)
        current = [m.astype(bool) for m in masks]
        active = list(range(len(masks)))
        for _ in range(self.iterations):
            prompts = {j: make_prompt(current[j], self.gamma, self.add_neg, self.distance) for j in active}
            active = [j for j in active if prompts[j] is not None]  # SAM emptied it: keep its last output
            if not active:
                break
            low_res = self.decode(embedding, [prompts[j] for j in active], [current[j] for j in active], resized, (h, w))
            full = self.shared.upsample(low_res, (h, w), resized)
            for row, j in enumerate(active):
                logits[j] = full[row].float().cpu()
                current[j] = (logits[j] > 0).numpy()
        return logits

    def decode(self, embedding: torch.Tensor, prompts: list[Prompt], masks: list[np.ndarray],
               resized: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:  # fmt: skip
        """Low-resolution logits [J, 256, 256] of SAM's output with the best predicted IoU."""
        device = self.shared.device
        scale = torch.tensor([resized[1] / size[1], resized[0] / size[0]], device=device)
        kwargs: dict = {}
        if self.use_points:
            points = torch.tensor([p.points for p in prompts], dtype=torch.float32, device=device) * scale
            kwargs["input_points"] = points[:, None]
            kwargs["input_labels"] = torch.tensor([p.labels for p in prompts], device=device)[:, None]
        if self.use_box:
            boxes = torch.tensor([p.box for p in prompts], dtype=torch.float32, device=device) * scale.repeat(2)
            kwargs["input_boxes"] = boxes[:, None]
        if self.use_mask:
            dense = [mask_prompt(m, p.gaussian, resized, self.shared.input_size, self.strength) for m, p in zip(masks, prompts)]
            kwargs["input_masks"] = torch.stack(dense).to(device)
        with autocast(self.precision, device):
            out = self.sam(**self.shared.batch(embedding, len(prompts)), multimask_output=True, **kwargs)
        best = out.iou_scores[:, 0].argmax(-1)
        return out.pred_masks[torch.arange(len(prompts)), 0, best].float()
