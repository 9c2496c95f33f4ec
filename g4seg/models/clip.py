"""Dense CLIP image features (patch tokens) from an open_clip vision transformer.

`DenseCLIP("tiny")` is a small random ViT (seeded, the same in every process) for tests and
the offline demo; otherwise an open_clip architecture name with a pretrained tag or a
local checkpoint file. Positional embeddings are interpolated, so any input size that is a
multiple of the patch size works (448 with ViT-B/16 gives a 28x28 grid).
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast, check_precision
from . import hub

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


CLIP_GET = "python -c \"import open_clip; open_clip.create_model('{model}', pretrained='openai', cache_dir='clip')\" (the file under ./clip)"


@functools.lru_cache(maxsize=None)
def trained_with_quick_gelu(model: str, pretrained: str | None) -> bool | None:
    """The activation the weights were trained with, from open_clip's own pretrained
    metadata: a tag ("openai") directly; a file when it is a tag's release (its sha256 in the
    tag's URL, as OpenAI's are, or under the tag's hub repository name). None: unknown."""
    import open_clip

    if not pretrained:
        return None
    tags = open_clip.list_pretrained_tags_by_model(model) if model in open_clip.list_models() else []
    if not hub.looks_local(pretrained):
        cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained in tags else {}
        return bool(cfg.get("quick_gelu", False)) if cfg else None
    path = Path(pretrained).expanduser().resolve()
    digest = None
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(model, tag)
        repo = (cfg.get("hf_hub") or "").strip("/").split("/")[-1]
        if repo and repo in str(path):
            return bool(cfg.get("quick_gelu", False))
        if cfg.get("url") and path.is_file():
            digest = digest or _sha256(path)
            if digest in cfg["url"]:
                return bool(cfg.get("quick_gelu", False))
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def shared_clip(model: str, pretrained: str | None, quick_gelu: bool | None = None) -> nn.Module:
    """One CLIP per (architecture, weights, activation) in a process: correspondence
    refiners and CLIP segmenters naming the same CLIP share it."""

    if model != "tiny" and quick_gelu is None:
        quick_gelu = trained_with_quick_gelu(model, pretrained)

    def load() -> nn.Module:
        if model == "tiny":
            from .tiny import tiny_clip

            return tiny_clip().eval().requires_grad_(False)
        return load_clip(model, pretrained, quick_gelu).eval().requires_grad_(False)

    return hub.shared("clip", (model, pretrained), load, quick_gelu)


def load_clip(model: str, pretrained: str | None, quick_gelu: bool | None = None) -> nn.Module:
    """open_clip's model with the activation its weights were trained with: `quick_gelu`
    when given, else what open_clip's metadata says of the weights (OpenAI CLIP, SCLIP and
    ClearCLIP use QuickGELU; open_clip itself builds "ViT-B-16" with GELU whatever the
    weights). Unknown weights keep open_clip's default, with a warning."""
    import open_clip

    get = CLIP_GET.format(model=model)
    hub.require_local(pretrained, "file", "the open_clip checkpoint", get, "pretrained")
    if quick_gelu is None:
        quick_gelu = trained_with_quick_gelu(model, pretrained)
        if quick_gelu is None and pretrained:
            warnings.warn(f"{pretrained}: not a release open_clip knows for {model}; building it with its default "
                          "activation (GELU). For OpenAI CLIP weights set quick_gelu: true", stacklevel=2)  # fmt: skip
    try:
        clip = open_clip.create_model(model, pretrained=pretrained, force_quick_gelu=bool(quick_gelu))
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, IndexError) as e:  # not a checkpoint at all (torch.load;
        # its weights-only unpickler can fail on random bytes with an IndexError)
        raise hub.missing(str(pretrained), f"not a readable checkpoint ({type(e).__name__}; a truncated or corrupt "
                          "download?)", "the weights", get, "pretrained") from None  # fmt: skip
    except (RuntimeError, AssertionError, KeyError, ValueError) as e:  # open_clip asserts on shape mismatches
        first = hub.first_line(e, None) or type(e).__name__
        if "PytorchStreamReader" in first:  # a zip checkpoint cut short
            raise hub.missing(str(pretrained), f"not a readable checkpoint ({hub.why(e)})", "the weights", get,
                              "pretrained") from None  # fmt: skip
        raise hub.missing(str(pretrained), f"cannot load as open_clip {model} (weights of another architecture?): {first}",
                          "the weights", get, "pretrained") from None  # fmt: skip
    return clip


def vit_tokens(visual: nn.Module, x: torch.Tensor, positional) -> torch.Tensor:
    """[B, 1 + gh*gw, D] tokens entering the first block of an open_clip ViT for a normalised
    image batch; `positional(gh, gw)` gives the (interpolated) positional embeddings."""
    x = visual.conv1(x.to(visual.conv1.weight.dtype))
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(b, 1, -1), x], dim=1) + positional(gh, gw).to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


class DenseCLIP(nn.Module):
    """Args:
        model: "tiny" or an open_clip architecture (e.g. "ViT-B-16").
        pretrained: open_clip tag ("openai") or a checkpoint path; None for tiny.
        image_size: input side; default 448 (real) / 64 (tiny).
        layer: transformer block whose output tokens are used (-1 = last; ln_post and the
            projection are applied only for the last block).
        maskclip: take the value embedding of that block's attention (MaskCLIP) instead of
            its full output; better localised features for dense matching.
        quick_gelu: the activation of the weights (None: from open_clip's metadata; see `load_clip`).
        precision: see `g4seg.precision` (the reference runs fp32).
    """

    def __init__(
        self,
        model: str = "tiny",
        pretrained: str | None = None,
        image_size: int | None = None,
        layer: int = -1,
        maskclip: bool = False,
        quick_gelu: bool | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.precision = check_precision("DenseCLIP", precision)
        self.random_weights = model == "tiny" or not pretrained  # an architecture without weights is random too
        self.visual = shared_clip(model, pretrained, quick_gelu).visual
        self.visual.eval().requires_grad_(False)
        self.patch = int(self.visual.conv1.kernel_size[0])
        self.image_size = image_size or (64 if model == "tiny" else 448)
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the patch size {self.patch}")
        n_blocks = len(self.visual.transformer.resblocks)
        self.layer = layer % n_blocks
        self.maskclip = maskclip
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def positional(self, g: int) -> torch.Tensor:
        pos = self.visual.positional_embedding
        cls, grid = pos[:1], pos[1:]
        old = math.isqrt(grid.shape[0])
        if old != g:
            grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(g * g, -1)
        return torch.cat([cls, grid])

    @torch.no_grad()
    def features(self, images: list[torch.Tensor]) -> torch.Tensor:
        """[B, g, g, D] L2-normalised patch features of uint8 [H, W, 3] images."""
        s = self.image_size
        batch = np.stack([cv2.resize(im.cpu().numpy(), (s, s), interpolation=cv2.INTER_AREA) for im in images])
        device = self.mean.device
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        with autocast(self.precision, device):
            x = self.tokens(x)
        b, g = x.shape[0], self.grid
        return F.normalize(x.float(), dim=-1).reshape(b, g, g, -1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = vit_tokens(v, x, lambda gh, gw: self.positional(gh))
        blocks = v.transformer.resblocks
        for block in blocks[: self.layer]:
            x = block(x)
        block = blocks[self.layer]
        if self.maskclip:
            attn = block.attn
            d = attn.embed_dim
            x = attn.out_proj(F.linear(block.ln_1(x), attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :]))
        else:
            x = block(x)
        if self.layer == len(blocks) - 1:
            x = v.ln_post(x)
            if v.proj is not None:
                x = x @ v.proj
        return x[:, 1:]
