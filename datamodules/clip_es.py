"""CLIP-ES seeds (Lin et al., CVPR 2023) as a coarse producer: G4Seg's WSSS baseline.

As its released `generate_cams_voc12.py` / `generate_cams_coco14.py` run it, on an open_clip
ViT (OpenAI ViT-B/16, QuickGELU), one image at a time:

  * text: "a clean origami {}." for its class names (`new_class_names`: "bird avian",
    "person with clothes,people,human", ...) and for its background words; each one
    L2-normalised (its zero-shot classifier with a single template);
  * image: resized (PIL bicubic) to its size rounded up to a multiple of the patch size; the
    positional embedding upsampled bilinearly to that grid and rounded to float16, as its
    `upsample_pos_emb` stores it (in float32 runs too);
  * Grad-CAM: the softmax over [the image's classes; background words] of logit_scale x the
    cosine between the mean patch token of the last block (after ln_post and the projection)
    and each text; per present class, the gradient of its probability w.r.t. the last
    block's `ln_1` output, averaged over the tokens, weights that output; ReLU; min-max
    scaled (twice, as pytorch_grad_cam's per-layer and aggregate steps do);
  * class-aware attention affinity: the head-averaged attention of the last 8 blocks,
    averaged, patch tokens only; columns then rows normalised, 2 more such rounds,
    symmetrised, squared once; only columns inside the boxes around the CAM (`scoremap2bbox`,
    threshold 0.4 of its maximum for VOC, 0.7 for COCO, every contour) kept; refined CAM = affinity @ CAM, min-max
    scaled and resized (bilinear) to the image; stored as float16, as CLIP-ES saves it;
  * coarse probabilities as its `eval_cam_with_crf.py` builds them: background 1 - max.

Image-level labels come from the ground truth (classes in the label map), as in WSSS; the
report names the source "CLIP-ES (labels from GT)".

One deviation, stated: CLIP-ES runs a pure float16 model on a GPU; `precision: fp16` (and
"auto" on a GPU) runs float16 *autocast* over float32 weights, which rounds differently
(113 label pixels of one VOC image in review, where CLIP-ES's own fp32 and fp16 runs differ
by 561); `fp32` is exact to its CPU runs.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from g4seg.errors import ConfigError
from g4seg.models.clip import CLIP_GET, CLIP_MEAN, CLIP_STD, shared_clip, vit_tokens
from g4seg.precision import autocast, check_precision
from g4seg.types import IGNORE_INDEX, ClassProbs

from .clip_es_names import RELEASES
from .coarse import ImageByImageProducer

TEMPLATE = "a clean origami {}."
AFFINITY_BLOCKS = 8
BOX_THRESHOLD = 0.4  # the VOC release's; each release names its own (clip_es_names.RELEASES)


def scale_cam(cam: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch_grad_cam's `scale_cam_image` for one map: min to 0, divided by max + 1e-7,
    optionally resized to (width, height)."""
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    return cv2.resize(np.float32(cam), size) if size is not None else np.float32(cam)


def box_mask(cam: np.ndarray, threshold: float = BOX_THRESHOLD) -> np.ndarray:
    """CLIP-ES's `scoremap2bbox` (multi-contour) as a 0/1 mask of the boxes' union [h, w]:
    the map as uint8, thresholded at int(threshold x its max), a box around every contour
    (x1 and y1 clipped to width-1 / height-1, and the box's slices end before them)."""
    h, w = cam.shape
    gray = (cam * 255).astype(np.uint8)
    _, binary = cv2.threshold(gray, int(threshold * gray.max()), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    mask = np.zeros((h, w), np.float32)
    for contour in contours:
        x, y, bw, bh = cv2.boundingRect(contour)
        mask[y : min(y + bh, h - 1), x : min(x + bw, w - 1)] = 1
    return mask


def affinity(attention: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """[n, n] transition matrix from averaged patch attention: columns then rows summed to
    one, `rounds` more times, symmetrised, squared once."""
    t = attention / attention.sum(0, keepdim=True)
    t = t / t.sum(1, keepdim=True)
    for _ in range(rounds):
        t = t / t.sum(0, keepdim=True)
        t = t / t.sum(1, keepdim=True)
    t = (t + t.T) / 2
    return t @ t


class CLIPES(ImageByImageProducer):
    """Args:
    clip, pretrained, quick_gelu: the CLIP (released: ViT-B-16, OpenAI weights, QuickGELU);
        "tiny" is a random one for tests.
    release: "voc" or "coco" (CLIP-ES's class names and background words for VOC 2012 /
        COCO 2014, in the datasets' class order: the dataset must have 21 / 81 classes).
    names, background: lists overriding the release's (names: one per foreground class, in
        the dataset's order).
    background_power: background = (1 - max CAM) ** power. 1 is what CLIP-ES's dCRF reads
        (`eval_cam_with_crf.py`); its seed evaluation (`eval_cam.py`) reports the better of 1
        and 2 on the evaluated set, so a "Seed" column needs both runs.
    precision: "auto" (fp16 autocast on a GPU, fp32 on the CPU), "fp32", "bf16", "fp16".
    box_threshold: `scoremap2bbox`'s threshold of the CAM's maximum; default the release's
        (VOC 0.4, COCO 0.7, as its two scripts).
    """

    FILES_NEEDED = {"pretrained": "the open_clip checkpoint: " + CLIP_GET.replace("{model}", "{clip}")}

    def __init__(self, clip: str = "tiny", pretrained: str | None = None, quick_gelu: bool | None = None,
                 release: str = "voc", names: list[str] | None = None, background: list[str] | None = None,
                 background_power: float = 1.0, precision: str = "auto",
                 box_threshold: float | None = None) -> None:  # fmt: skip
        super().__init__()
        if release not in RELEASES:
            raise ConfigError(f"CLIPES release must be one of {sorted(RELEASES)}, got {release!r}")
        self.release = release
        self.names = list(names) if names is not None else list(RELEASES[release]["names"])
        self.background = list(background) if background is not None else list(RELEASES[release]["background"])
        if not self.names or not self.background:
            raise ConfigError("CLIPES needs at least one class name and one background word")
        if not background_power > 0:
            raise ConfigError(f"CLIPES background_power must be > 0, got {background_power}")
        self.background_power = float(background_power)
        self.box_threshold = float(RELEASES[release]["box_threshold"] if box_threshold is None else box_threshold)
        if not 0.0 <= self.box_threshold < 1.0:
            raise ConfigError(f"CLIPES box_threshold must lie in [0, 1), got {box_threshold}")
        self.precision = check_precision("CLIPES", precision)
        self.random_weights = clip == "tiny" or not pretrained
        self.model = shared_clip(clip, pretrained, quick_gelu)  # a submodule: it follows the module's device
        self._text: dict[str, torch.Tensor] = {}

    @property
    def label(self) -> str:
        return "CLIP-ES (labels from GT)"

    @property
    def device(self) -> torch.device:
        return self.model.visual.conv1.weight.device

    # -- stages ------------------------------------------------------------------------------
    @torch.no_grad()
    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(foreground [C, D], background [B, D]) normalised text embeddings, cached per device."""
        key = str(self.device)
        if key not in self._text:
            import open_clip

            tokens = open_clip.tokenize([TEMPLATE.format(n) for n in self.names + self.background]).to(self.device)
            with autocast(self.precision, self.device):
                emb = self.model.encode_text(tokens).float()
            self._text = {key: F.normalize(emb, dim=-1)}
        emb = self._text[key]
        return emb[: len(self.names)], emb[len(self.names) :]

    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """[1, 3, H', W'] normalised, H' and W' rounded up to the patch size (PIL bicubic)."""
        p = self.patch
        h, w = image.shape[:2]
        size = (int(np.ceil(w / p) * p), int(np.ceil(h / p) * p))
        resized = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC), dtype=np.float32) / 255.0
        x = torch.from_numpy(resized).permute(2, 0, 1)[None].to(self.device)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def patch(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])

    def positional(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.model.visual.positional_embedding
        cls, grid = pos[:1], pos[1:]
        g0 = int(np.sqrt(grid.shape[0]))
        grid = grid.T.reshape(1, -1, g0, g0)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([cls, grid.reshape(grid.shape[1], -1).T]).half().to(pos.dtype)  # as upsample_pos_emb stores it

    @staticmethod
    def block_with_weights(block, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """open_clip's residual block on [1, L, D] tokens, also returning its head-averaged
        attention [1, L, L]; `y` is ln_1(x) when the caller needs it as a leaf."""
        y = block.ln_1(x) if y is None else y
        attn = block.attn
        q = y if attn.batch_first else y.transpose(0, 1)
        out, weights = attn(q, q, q, need_weights=True, average_attn_weights=True)
        out = out if attn.batch_first else out.transpose(0, 1)
        x = x + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x))), weights

    def grad_cams(self, image: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(Grad-CAMs [K, gh, gw] of the K classes in `fg`, averaged attention [n, n] of the
        last 8 blocks' patch tokens)."""
        v = self.model.visual
        gh, gw = image.shape[2] // self.patch, image.shape[3] // self.patch
        blocks = v.transformer.resblocks
        weights = []
        with torch.no_grad(), autocast(self.precision, self.device):
            x = vit_tokens(v, image, self.positional)
            for block in blocks[:-1]:
                x, w = self.block_with_weights(block, x)
                weights.append(w)
        # Trainer.predict runs under inference mode, whose tensors autograd refuses: copies
        with torch.inference_mode(False), torch.enable_grad(), autocast(self.precision, self.device):
            x = x.clone()
            act = blocks[-1].ln_1(x).detach().requires_grad_(True)  # the Grad-CAM target layer's output
            out, w = self.block_with_weights(blocks[-1], x, act)
            pooled = v.ln_post(out)[:, 1:].mean(1) @ v.proj
            text = torch.cat([fg, bg]).clone()
            logits = self.model.logit_scale.exp() * F.normalize(pooled.float(), dim=-1) @ text.T
            probs = logits.softmax(-1)[0]
            cams = []
            for k in range(len(fg)):
                (grad,) = torch.autograd.grad(probs[k], act, retain_graph=k < len(fg) - 1)
                a, g = act[0, 1:].detach().float(), grad[0, 1:].float()
                cam = torch.relu((a * g.mean(0)).sum(-1)).reshape(gh, gw).cpu().numpy()
                cams.append(scale_cam(scale_cam(cam)))  # per-layer, then the (one-layer) aggregate
        weights.append(w.detach())
        attention = torch.stack(weights[-AFFINITY_BLOCKS:]).float().mean(0)[0, 1:, 1:].cpu()
        return np.stack(cams), attention

    def refine(self, cam: np.ndarray, trans: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """The class-aware refinement of one CAM by the image's `affinity`, at `size` (width,
        height): only the columns inside the CAM's boxes act (CLIP-ES masks the matrix's
        columns; masking the CAM's entries instead is the same product, without an n x n copy)."""
        masked = torch.from_numpy(cam * box_mask(cam, self.box_threshold)).reshape(-1, 1)
        refined = (trans @ masked).reshape(cam.shape).numpy().astype(np.float32)
        return scale_cam(refined, size)

    # -- producer ----------------------------------------------------------------------------
    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int, class_names=None,
             digests=None) -> ClassProbs:  # fmt: skip
        if num_classes != len(self.names) + 1:
            raise ConfigError(f"CLIPES has {len(self.names)} class names ({self.release}) but the dataset has "
                              f"{num_classes - 1} foreground classes; set release or names")  # fmt: skip
        h, w = image.shape[:2]
        present = sorted(int(c) for c in np.unique(gt) if c not in (0, IGNORE_INDEX) and 0 < c < num_classes)
        notes = [f"{self.label}: image-level labels from the ground truth, as in WSSS"]
        if self.random_weights:
            notes.append("coarse masks from CLIP-ES on random (untrained) CLIP weights")
        if not present:
            notes.append("no foreground class in the image-level labels: background only")
            return ClassProbs(torch.zeros(1, dtype=torch.int64), torch.ones(1, h, w), tuple(notes))
        fg, bg = self.text_features()
        cams, attention = self.grad_cams(self.image_tensor(image), fg[[c - 1 for c in present]], bg)
        # float16, as CLIP-ES saves `attn_highres`, which its dCRF and evaluation read
        trans = affinity(attention)
        maps = np.stack([self.refine(cam, trans, (w, h)) for cam in cams]).astype(np.float16).astype(np.float32)
        probs = np.concatenate([(1 - maps.max(0, keepdims=True)) ** self.background_power, maps])
        return ClassProbs(torch.tensor([0, *present]), torch.from_numpy(probs), tuple(notes))
