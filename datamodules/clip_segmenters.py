"""Coarse masks computed in the harness by training-free CLIP segmenters.

Each changes only the last block of CLIP's ViT (SCLIP's `custom_attn(csa=True)`,
ClearCLIP's q-q attention, MaskCLIP's `return_qkv` value path); everything else is shared
and follows SCLIP's released inference
(wangf3014/SCLIP, `clip_segmentor.py` and `configs/cfg_*.py`):
  * text: for every name of a class-name file (one line per class, index = class id,
    synonyms comma-separated, background words on line 0), the 80 OpenAI ImageNet
    templates are encoded, L2-normalised, averaged and normalised again;
  * image: resized so its short side is `short_side` (336; long side at most 2048,
    bilinear), CLIP-normalised, `slide_crop` x `slide_crop` windows with `slide_stride`
    (224 / 112); each window's patch-token cosine similarities are upsampled bilinearly
    to the window, overlaps averaged, the result upsampled to the original image;
  * probabilities: softmax over all names of `logit_scale` x similarity, a class takes the
    max over its names; classes covering less than `area_thd` of the predicted
    foreground are dropped; pixels whose best probability is below `prob_thd` go to
    background (VOC 21: logit scale 65, prob_thd 0.1, area_thd 0.1).
Output: `ClassProbs` (background first) renormalised over the classes kept, whose argmax
is the reference's prediction: `labels: image` keeps the image's ground-truth classes
(the inexact-segmentation setting; the softmax runs over their names only), `labels: all`
every class of the dataset (open vocabulary), then those predicted somewhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from g4seg.errors import ConfigError
from g4seg.models.clip import CLIP_GET, CLIP_MEAN, CLIP_STD, shared_clip, vit_tokens
from g4seg.precision import autocast, check_precision
from g4seg.types import IGNORE_INDEX, ClassProbs

from .coarse import ImageByImageProducer

NAMES = Path(__file__).parent / "names"
LABEL_SETS = ("image", "all")


def read_names(path: str | None, class_names: list[str]) -> list[list[str]]:
    """Names per class: from a class-name file, or the dataset's own names."""
    if path is None:
        return [["background"]] + [[n] for n in class_names[1:]]
    file = Path(path) if Path(path).is_file() else NAMES / path
    if not file.is_file():
        raise ConfigError(f"{path}: class-name file not found (bundled: {sorted(p.name for p in NAMES.glob('*.txt'))})")
    lines = [line.strip() for line in file.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    names = [[n.strip() for n in line.split(",") if n.strip()] for line in lines]
    if len(names) != len(class_names):
        raise ConfigError(f"{file}: {len(names)} lines for a dataset of {len(class_names)} classes (one line per class)")
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise ConfigError(f"{file}: line {empty[0]} has no class name (comma-separated names, one line per class)")
    return names


def sliding_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) windows as mmseg's slide inference: the last ones flush with the border."""
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


class CLIPSegmenter(ImageByImageProducer):
    """Base of MaskCLIP / SCLIP / ClearCLIP; subclasses define `last_block`. A coarse
    producer: the module runs it on its own device (`produce`), not the DataLoader.

    Args:
        clip: "tiny" (random, offline) or an open_clip architecture ("ViT-B-16").
        pretrained: open_clip tag or checkpoint path (OpenAI ViT-B/16 weights).
        names: class-name file (path, or a bundled one: "voc21_sclip.txt"); None = the
            dataset's class names with "background".
        labels: "image" (ground-truth image labels) or "all" (open vocabulary).
        logit_scale, prob_thd, area_thd: see the module docstring.
        short_side, slide_crop, slide_stride: resizing and sliding window (0 crop = whole image).
        quick_gelu: the activation of the weights; None = from open_clip's metadata (OpenAI
            CLIP, which SCLIP, ClearCLIP and MaskCLIP's numbers use: QuickGELU).
        precision: autocast of the vision tower, "fp32" (as released), "bf16", "fp16" or
            "auto" (`g4seg.precision`); similarities and probabilities stay fp32.
    """

    FILES_NEEDED = {"pretrained": "the open_clip checkpoint: " + CLIP_GET.replace("{model}", "{clip}")}

    def __init__(self, clip: str = "tiny", pretrained: str | None = None, names: str | None = None,
                 labels: str = "image", logit_scale: float = 65.0, prob_thd: float = 0.1,
                 area_thd: float | None = 0.1, short_side: int = 336, slide_crop: int = 224,
                 slide_stride: int = 112, quick_gelu: bool | None = None, precision: str = "fp32") -> None:  # fmt: skip
        super().__init__()
        self.precision = check_precision(type(self).__name__, precision)
        if labels not in LABEL_SETS:
            raise ConfigError(f"labels must be one of {LABEL_SETS}, got {labels!r}")
        if slide_crop < 0 or slide_stride < 1 or short_side < 1:
            raise ConfigError("short_side and slide_stride must be >= 1 and slide_crop >= 0")
        self.clip_name, self.pretrained, self.names_file, self.labels = clip, pretrained, names, labels
        self.logit_scale, self.prob_thd, self.area_thd = logit_scale, prob_thd, area_thd
        self.short_side, self.slide_crop, self.slide_stride = short_side, slide_crop, slide_stride
        self._text: dict[tuple, tuple[torch.Tensor, list[int]]] = {}
        self.random_weights = clip == "tiny" or not pretrained  # an architecture without weights is random too
        # loaded (or failing with the download hint) now, before any sample is read; a
        # submodule, so it follows the LightningModule to its device (shared with a G4Seg
        # refiner on the same CLIP: one copy, moved once)
        self.model = shared_clip(clip, pretrained, quick_gelu)

    @property
    def label(self) -> str:
        """How the report names the coarse source."""
        return type(self).__name__

    # -- model ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.visual.conv1.weight.device

    def text_features(self, class_names: list[str]) -> tuple[torch.Tensor, list[int]]:
        """[Q, D] normalised query embeddings and the class id of each query."""
        key = (*class_names, str(self.device))
        if key not in self._text:
            import open_clip
            from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

            names = read_names(self.names_file, class_names)
            tokenizer = open_clip.get_tokenizer("ViT-B-16")
            model = self.model
            feats, owner = [], []
            with torch.no_grad():
                for class_id, synonyms in enumerate(names):
                    for name in synonyms:
                        tokens = tokenizer([t(name) for t in OPENAI_IMAGENET_TEMPLATES]).to(self.device)
                        f = F.normalize(model.encode_text(tokens).float(), dim=-1).mean(0)
                        feats.append(F.normalize(f, dim=0))
                        owner.append(class_id)
            self._text[key] = (torch.stack(feats), owner)
        return self._text[key]

    def positional(self, gh: int, gw: int) -> torch.Tensor:
        """Positional embeddings for a gh x gw grid, interpolated as SCLIP does (bicubic by
        scale factor (g + 0.1) / g0)."""
        pos = self.model.visual.positional_embedding
        cls, grid = pos[:1], pos[1:]
        g0 = math.isqrt(grid.shape[0])
        if (gh, gw) == (g0, g0):
            return pos
        grid = grid.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((gh + 0.1) / g0, (gw + 0.1) / g0), mode="bicubic")
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])

    def tokens_before_last_block(self, x: torch.Tensor) -> torch.Tensor:
        v = self.model.visual
        x = vit_tokens(v, x, self.positional)
        for block in v.transformer.resblocks[:-1]:
            x = block(x)
        return x

    def last_block(self, block, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, gh, gw, D] normalised patch features of a normalised image batch."""
        v = self.model.visual
        gh, gw = x.shape[2] // v.conv1.kernel_size[0], x.shape[3] // v.conv1.kernel_size[1]
        x = self.last_block(v.transformer.resblocks[-1], self.tokens_before_last_block(x))
        x = v.ln_post(x) @ v.proj
        return F.normalize(x[:, 1:].float(), dim=-1).reshape(x.shape[0], gh, gw, -1)

    # -- inference -------------------------------------------------------------------------
    def similarities(self, image: np.ndarray, text: torch.Tensor) -> torch.Tensor:
        """[Q, H, W] cosine similarities at the original size (sliding window, averaged)."""
        h, w = image.shape[:2]
        scale = min(2048 / max(h, w), self.short_side / min(h, w))
        size = (int(w * scale + 0.5), int(h * scale + 0.5))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(resized).permute(2, 0, 1)[None].float().to(self.device) / 255.0
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        rh, rw = x.shape[2:]
        windows = sliding_windows(rh, rw, self.slide_crop, self.slide_stride) if self.slide_crop else [(0, rh, 0, rw)]
        total = torch.zeros(len(text), rh, rw, device=self.device)
        count = torch.zeros(1, rh, rw, device=self.device)
        for y1, y2, x1, x2 in windows:
            with autocast(self.precision, self.device):
                feats = self.patch_features(x[:, :, y1:y2, x1:x2])[0]  # [gh, gw, D], fp32
            sims = (feats @ text.T).permute(2, 0, 1)[None]
            total[:, y1:y2, x1:x2] += F.interpolate(sims, size=(y2 - y1, x2 - x1), mode="bilinear")[0]
            count[:, y1:y2, x1:x2] += 1
        return F.interpolate((total / count)[None], size=(h, w), mode="bilinear")[0]

    @torch.no_grad()
    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int, class_names=None,
             digests=None) -> ClassProbs:  # fmt: skip
        class_names = class_names or [f"class {i}" for i in range(num_classes)]
        text, owner = self.text_features(list(class_names))
        owner_t = torch.tensor(owner)
        if self.labels == "image":
            keep = sorted({0} | {int(c) for c in np.unique(gt) if c not in (0, IGNORE_INDEX)})
        else:
            keep = list(range(num_classes))
        queries = torch.nonzero(torch.isin(owner_t, torch.tensor(keep))).flatten()
        sims = self.similarities(image, text[queries.to(text.device)].to(self.device))
        probs = (self.logit_scale * sims).softmax(0).cpu()
        q_owner = owner_t[queries]
        per_class = torch.stack([probs[q_owner == c].max(0).values for c in keep])  # [K, H, W]
        if self.area_thd is not None and len(keep) > 1:
            pred = per_class.argmax(0)
            area = torch.stack([(pred == k).sum() for k in range(1, len(keep))]).float()
            per_class[1:] *= (area > self.area_thd * area.sum()).float()[:, None, None]
        top = per_class.max(0).values
        per_class[0] = torch.where(top < self.prob_thd, top, per_class[0])  # ties go to background
        ids = torch.tensor(keep)
        if self.labels == "all":
            present = sorted({0} | set(torch.unique(per_class.argmax(0)).tolist()))
            per_class, ids = per_class[present], ids[present]
        per_class = per_class / per_class.sum(0, keepdim=True).clamp_min(1e-12)
        notes = (f"coarse masks from {self.label} on random (untrained) CLIP weights",) if self.random_weights else ()
        return ClassProbs(ids.to(torch.int64), per_class.float(), notes)


class SCLIP(CLIPSegmenter):
    """SCLIP (Wang et al., 2024): correlative self-attention softmax(q q^T) + softmax(k k^T)
    applied to v in the last block; residual and feed-forward kept."""

    def last_block(self, block, x):
        attn = block.attn
        heads, d = attn.num_heads, attn.embed_dim
        q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2) for t in (q, k, v))
        scale = (d // heads) ** -0.5
        weights = ((q @ q.transpose(-1, -2)) * scale).softmax(-1) + ((k @ k.transpose(-1, -2)) * scale).softmax(-1)
        out = attn.out_proj((weights @ v).transpose(1, 2).reshape(x.shape))
        x = x + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x)))


# mc-lan/ClearCLIP `configs/cfg_{voc21,context60,coco_object}.py` over its ClearCLIPSegmentation
# defaults (logit_scale 50, slide_crop 448, slide_stride 224, Resize to short side 448, no
# area threshold). Its repository ships cls_voc21.txt (plain "background", "ship", "table");
# its Context/COCO-Object configs name cls_context60.txt / cls_coco_object.txt, which it
# does not ship: SCLIP's files of those names (the code ClearCLIP builds on) are used.
CLEARCLIP_RELEASES = {
    "voc21": {"names": "voc21_clearclip.txt", "prob_thd": 0.5},
    "context60": {"names": "context60_sclip.txt", "prob_thd": 0.15},
    "coco_object": {"names": "coco_object_sclip.txt", "prob_thd": 0.4},
}


class ClearCLIP(CLIPSegmenter):
    """ClearCLIP (Lan et al., 2024): q-q attention in the last block, its residual and
    feed-forward dropped (the attention output alone goes to ln_post and the projection).
    Runs with ClearCLIP's released settings for `release` (voc21, context60, coco_object);
    any key given overrides them; run.json records the values used."""

    def __init__(self, clip: str = "tiny", pretrained: str | None = None, release: str = "voc21",
                 names: str | None = None, labels: str = "image", logit_scale: float = 50.0,
                 prob_thd: float | None = None, area_thd: float | None = None, short_side: int = 448,
                 slide_crop: int = 448, slide_stride: int = 224, quick_gelu: bool | None = None,
                 precision: str = "fp32") -> None:  # fmt: skip
        if release not in CLEARCLIP_RELEASES:
            raise ConfigError(f"ClearCLIP release must be one of {sorted(CLEARCLIP_RELEASES)}, got {release!r}")
        r = CLEARCLIP_RELEASES[release]
        super().__init__(clip, pretrained, names or r["names"], labels, logit_scale,
                         r["prob_thd"] if prob_thd is None else prob_thd, area_thd, short_side, slide_crop,
                         slide_stride, quick_gelu, precision)  # fmt: skip
        self.release = release

    def resolved(self) -> dict:
        return {**self.settings, "names": self.names_file, "prob_thd": self.prob_thd}

    def last_block(self, block, x):
        attn = block.attn
        heads, d = attn.num_heads, attn.embed_dim
        q, _, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, v = (t.reshape(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2) for t in (q, v))
        weights = ((q @ q.transpose(-1, -2)) * (d // heads) ** -0.5).softmax(-1)
        return attn.out_proj((weights @ v).transpose(1, 2).reshape(x.shape))


class MaskCLIP(CLIPSegmenter):
    """MaskCLIP (Zhou et al., 2022), as its backbone's `return_qkv` path computes it: the
    value embedding of the last block through the attention's output projection (no
    query-key attention), with the block's residual and feed-forward, then the final norm
    and the visual projection (the head's 1x1 convolution).

    Only in SCLIP's inference (templates, names, windows, thresholds), and only when asked
    (`pipeline: sclip`): that is how SCLIP's paper evaluated MaskCLIP and where the MaskCLIP
    numbers G4Seg quotes come from; MaskCLIP's own mmseg inference (key smoothing, prompt
    denoising) is not implemented. The report names it so."""

    PIPELINES = ("sclip",)

    def __init__(self, pipeline: str | None = None, **kwargs) -> None:
        if pipeline not in self.PIPELINES:
            raise ConfigError(
                "MaskCLIP runs here only in SCLIP's inference (how SCLIP's paper evaluated it, the numbers G4Seg "
                f"quotes); set pipeline: sclip (got {pipeline!r}). Its own mmseg inference is not implemented"
            )
        super().__init__(**kwargs)
        self.pipeline = pipeline

    @property
    def label(self) -> str:
        return "MaskCLIP in SCLIP's inference"

    def last_block(self, block, x):
        attn = block.attn
        d = attn.embed_dim
        v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
        v = x + block.ls_1(attn.out_proj(v))
        return v + block.ls_2(block.mlp(block.ln_2(v)))
