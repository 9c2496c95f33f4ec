"""G4Seg's refiner: Semantic Correspondence Alignment (SCA) + Confidence Filtering (CF).

For each class c of a sample, the generated image (made with c's coarse mask injected)
shows where the diffusion model "thinks" the object is. Each generated pixel j finds its
most similar original pixel d_j by cosine similarity of dense CLIP features, and

    S*_c[j] = beta * S_c[j] + (1 - beta) * S_c[d_j]      only where S_c[j] in [low, high]

Each class is refined on its own with every other segment as its background, so the
probability mass a class gains or loses at a pixel is taken from or given to the
background channel (channel 0 -= sum of the class updates). That lets a label flip
toward and away from background; pixels outside every class's window are returned
unchanged (bit-identical).

Hard 0/1 input (label PNGs) leaves the window empty; see `soft_input` for what is done
then (`soften`), and the run's notes record it.

Matching runs on the feature grid (g x g cells, so memory is g^2 x g^2, not pixels^2).
Back at pixel level, each pixel takes the displacement of its cell: pixel p in cell j
reads S at p + (centre(d_j) - centre(j)), rounded and clamped to the image. This keeps
the coarse map's full-resolution detail and moves it by whole-cell offsets.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.profiler import record_function

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.models.clip import CLIP_GET, DenseCLIP
from g4seg.precision import check_precision
from g4seg.types import ClassProbs, Generated, Sample

from .soft_input import SOFTEN_MODES, soften, why_inert

PRESET_BETA = {"open_vocabulary": 0.8, "wsss": 0.9}


def match_cells(generated: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """For every generated cell, the index of the most similar original cell: [g*g]."""
    g = generated.reshape(-1, generated.shape[-1])
    o = original.reshape(-1, original.shape[-1])
    return (g @ o.T).argmax(dim=1)


def source_pixels(match: torch.Tensor, grid: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) [H, W] of the original pixel each pixel reads, from cell displacements."""
    ys = torch.arange(height)
    xs = torch.arange(width)
    cy = (ys * grid) // height  # cell row of each pixel row
    cx = (xs * grid) // width
    cell = cy[:, None] * grid + cx[None, :]
    target = match[cell]
    dy = (target // grid - cy[:, None]).double() * (height / grid)
    dx = (target % grid - cx[None, :]).double() * (width / grid)
    rows = (ys[:, None] + dy).round().long().clamp(0, height - 1)
    cols = (xs[None, :] + dx).round().long().clamp(0, width - 1)
    return rows, cols


def sca_update(s: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, beta: float, low: float, high: float) -> torch.Tensor:
    updated = beta * s + (1.0 - beta) * s[rows, cols]
    return torch.where((s >= low) & (s <= high), updated, s)


class Correspondence(Refiner):
    """SCA + CF with dense CLIP features.

    Args:
        clip: "tiny" (random ViT) or an open_clip architecture, e.g. "ViT-B-16".
        pretrained: open_clip tag or checkpoint path for a real model.
        image_size, layer, maskclip, quick_gelu: see `DenseCLIP`.
        beta: weight of the pixel's own probability; 0.8 open-vocabulary, 0.9 WSSS
            (default: the preset's, else 0.8).
        preset: "open_vocabulary" or "wsss": beta by name; giving another beta as well is
            refused. run.json records the beta that ran.
        conf_range: (low, high) probabilities that may change; (1, 0) disables CF updates.
        soften: what to do with input on which SCA + CF could change no label (0/1
            probabilities such as label PNGs, or none inside `conf_range`): "auto" softens
            such input (signed-distance sigmoid of its label map, see `soft_input`) and
            leaves other input alone; "always" softens every input; "never" refuses such
            input with an error saying what to set.
        temperature: softening width in pixels (probability 0.27/0.73 at 1 T outside/inside).
        precision: the CLIP features' autocast, "fp32" (as released), "bf16", "fp16" or "auto"
            (`g4seg.precision`); the matching itself runs in fp32.
    """

    needs_generated = True

    FILES_NEEDED = {"pretrained": "the open_clip checkpoint: " + CLIP_GET.replace("{model}", "{clip}")}

    def __init__(
        self,
        clip: str = "tiny",
        pretrained: str | None = None,
        image_size: int | None = None,
        layer: int = -1,
        maskclip: bool = False,
        quick_gelu: bool | None = None,
        beta: float | None = None,
        preset: str | None = None,
        conf_range: tuple[float, float] = (0.2, 0.6),
        soften: str = "auto",
        temperature: float = 8.0,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        if preset is not None:
            if preset not in PRESET_BETA:
                raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESET_BETA)}")
            if beta is not None and beta != PRESET_BETA[preset]:
                raise ConfigError(f"Correspondence: preset {preset} means beta {PRESET_BETA[preset]}, but beta {beta} "
                                  "is given as well; give one of them")  # fmt: skip
            beta = PRESET_BETA[preset]
        beta = 0.8 if beta is None else beta
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must lie in [0, 1], got {beta}")
        check_precision("Correspondence", precision)
        self.encoder = DenseCLIP(clip, pretrained, image_size, layer, maskclip, quick_gelu, precision)
        self.random_weights = self.encoder.random_weights
        self.beta, self.preset = float(beta), preset
        self.low, self.high = float(conf_range[0]), float(conf_range[1])
        if soften not in SOFTEN_MODES:
            raise ConfigError(f"Correspondence soften must be one of {SOFTEN_MODES}, got {soften!r}")
        if not temperature > 0:
            raise ConfigError(f"Correspondence temperature must be > 0 pixels, got {temperature}")
        self.soften, self.temperature = soften, float(temperature)
        self._told = False

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        if generated is None:
            raise ValueError("Correspondence needs generated images: give its strategy an injector")
        fg = probs.foreground()
        if not fg:
            return probs  # background only: no class to refine
        if self.disabled:  # configured to change nothing (an ablation): say so, as for softened input
            return probs.with_probs(probs.probs, f"no update ({self.disabled})")
        probs = self.soft_input(sample, probs)
        images = [sample.image] + [generated.image_for(c) for _, c in fg]
        with record_function("g4seg.clip_features"):
            feats = self.encoder.features(images)  # original and every class's image, one forward
        with record_function("g4seg.matching"):  # on the features' device; only the cell indices come back
            matches = torch.stack([match_cells(gen, feats[0]) for gen in feats[1:]]).cpu()
        h, w = probs.size
        out = probs.probs.clone()
        gained = torch.zeros(h, w)
        for (k, _), match in zip(fg, matches):
            rows, cols = source_pixels(match, self.encoder.grid, h, w)
            out[k] = sca_update(probs.probs[k], rows, cols, self.beta, self.low, self.high)
            gained += out[k] - probs.probs[k]
        changed = gained != 0
        out[0] = torch.where(changed, (probs.probs[0] - gained).clamp(0.0, 1.0), probs.probs[0])
        return probs.with_probs(out)

    def resolved(self) -> dict:
        return {**self.settings, "beta": self.beta}

    @property
    def disabled(self) -> str | None:
        """Why this configuration can change no probability, or None."""
        if self.beta == 1.0:
            return "beta = 1"
        if self.low > self.high:
            return f"empty conf_range [{self.low:g}, {self.high:g}]"
        return None

    @property
    def softening(self) -> str:
        return f"signed-distance sigmoid, temperature {self.temperature:g} px"

    def soft_input(self, sample: Sample, probs: ClassProbs) -> ClassProbs:
        reason = why_inert(probs, self.low, self.high)
        if self.soften == "never":
            if reason:
                raise ConfigError(
                    f"sample {sample.id}: Correspondence got {reason}, so SCA + CF would change no label; "
                    "set soften: auto (or give soft probabilities, e.g. .npz files)"
                )
            return probs
        if reason is None and self.soften == "auto":
            return probs
        if not self._told:
            rank_zero_warn(
                f"g4seg: Correspondence: sample {sample.id} has {reason or 'soft input'}; softening it "
                f"({self.softening}; soften: {self.soften}). Counted per sample in the report's notes."
            )
            self._told = True
        return probs.with_probs(soften(probs, self.temperature).probs, f"input softened ({self.softening})")
