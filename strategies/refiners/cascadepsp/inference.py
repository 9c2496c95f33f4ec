"""CascadePSP inference: a global step on the whole image resized to max side L, then a
local step on L x L crops at full resolution (skipped with `fast`).

Follows the released procedure (`segmentation_refinement/eval_helper.py` of the official
package) step for step, and is tested against it on the same random weights:
  * resizes by `scale_factor` (output sizes floored, source coordinates from the factor),
    area for shrinking, bicubic (image) / bilinear (mask) for enlarging;
  * inputs padded as `safe_forward` does (image 0, masks -1; see `padded_forward`);
  * local step: crops of L with stride L/2 - 32; a crop runs only for masks whose binarised
    global result covers between 10% and 90% of it (decided per mask); the global 1/4
    prediction enters as `inter_s8` with `inter_s4=None`, so passes 2 and 3 run on every
    crop; 16 px of each inner border dropped, overlaps averaged, uncovered pixels keep the
    binarised global result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from g4seg.models.cascadepsp import RefinementNetwork
from g4seg.precision import autocast

PAD = 16
LOW, HIGH = 0.1, 0.9  # crops whose foreground fraction lies outside are not worth refining


def resize_max_side(x: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    ratio = side / max(x.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, scale_factor=ratio, mode=mode, **kwargs)


def padded_forward(net: RefinementNetwork, image, seg, inter_s8=None, inter_s4=None) -> dict[str, torch.Tensor]:
    """Pads (image 0, masks -1) and crops the outputs back.

    As the official `safe_forward`: when either side is not a multiple of 8, *both* sides
    grow to the next multiple of 8 strictly above them (a side of 128 becomes 136). The
    padding changes what the PSP pooling sees, so it matters for the numbers.
    """
    h, w = seg.shape[-2:]
    ph = pw = 0
    if h % 8 or w % 8:
        ph, pw = (h // 8 + 1) * 8 - h, (w // 8 + 1) * 8 - w
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        seg, inter_s8, inter_s4 = (
            None if t is None else F.pad(t, (0, pw, 0, ph), value=-1.0) for t in (seg, inter_s8, inter_s4)
        )
    out = net(image, seg, inter_s8, inter_s4)
    return {k: v[..., :h, :w] for k, v in out.items() if k in ("pred_224", "pred_56_2", "pred_28_3")}


def global_step(net: RefinementNetwork, image: torch.Tensor, seg: torch.Tensor, L: int) -> dict[str, torch.Tensor]:
    h, w = seg.shape[-2:]
    if max(h, w) > L:
        image, seg = resize_max_side(image, L, "area"), resize_max_side(seg, L, "area")
    elif max(h, w) < L:
        image, seg = resize_max_side(image, L, "bicubic"), resize_max_side(seg, L, "bilinear")
    return padded_forward(net, image, seg)


@dataclass(frozen=True)
class Crop:
    y0: int
    y1: int
    x0: int
    x1: int


def crop_grid(h: int, w: int, L: int) -> list[Crop]:
    """L x L windows (clipped to the image) covering it with stride L/2 - 2*16, in the
    official order (columns outer, rows inner; a start seen before is not repeated)."""
    step = L // 2 - 2 * PAD
    if step <= 0:
        raise ValueError(f"CascadePSP needs L > {4 * PAD} for its local step, got L={L}")
    crops, seen = [], set()
    for xi in range(w // step + 1):
        for yi in range(h // step + 1):
            y0, x0 = yi * step, xi * step
            y1, x1 = y0 + L, x0 + L
            if y1 > h:
                y1, y0 = h, h - L
            if x1 > w:
                x1, x0 = w, w - L
            y0, x0 = max(0, y0), max(0, x0)
            if (y0, x0) not in seen:
                seen.add((y0, x0))
                crops.append(Crop(y0, min(h, y1), x0, min(w, x1)))
    return crops


def local_step(
    net: RefinementNetwork, image: torch.Tensor, global_out: dict[str, torch.Tensor], L: int
) -> tuple[torch.Tensor, int]:
    """Full-resolution refinement from the global result; returns it and the (crop, mask) passes run."""
    h, w = image.shape[-2:]
    seg_224 = (F.interpolate(global_out["pred_224"], size=(h, w), mode="bilinear", align_corners=False) > 0.5)
    seg_224 = seg_224.float() * 2 - 1
    seg_56 = F.interpolate(global_out["pred_56_2"], size=(h, w), mode="bilinear", align_corners=False) * 2 - 1
    total = torch.zeros_like(seg_224)
    weight = torch.zeros_like(seg_224)
    ran = 0
    for c in crop_grid(h, w, L):
        part = seg_224[..., c.y0 : c.y1, c.x0 : c.x1]
        fraction = (part > 0).float().mean(dim=(1, 2, 3))  # per mask, as the official batch of one
        keep = torch.nonzero((fraction <= HIGH) & (fraction >= LOW)).flatten()
        if not len(keep):
            continue
        pred = padded_forward(net, image[keep, :, c.y0 : c.y1, c.x0 : c.x1], part[keep],
                              seg_56[keep, :, c.y0 : c.y1, c.x0 : c.x1])["pred_224"]  # fmt: skip
        ran += len(keep)
        # drop PAD pixels along every border that is not the image's own
        ys = PAD if c.y0 else 0
        ye = (c.y1 - c.y0) - (PAD if c.y1 != h else 0)
        xs = PAD if c.x0 else 0
        xe = (c.x1 - c.x0) - (PAD if c.x1 != w else 0)
        total[keep, :, c.y0 + ys : c.y0 + ye, c.x0 + xs : c.x0 + xe] += pred[..., ys:ye, xs:xe]
        weight[keep, :, c.y0 + ys : c.y0 + ye, c.x0 + xs : c.x0 + xe] += 1
    result = torch.where(weight > 0, total / weight.clamp(min=1), seg_224 / 2 + 0.5)
    return result, ran


@torch.no_grad()
def refine_masks(
    net: RefinementNetwork, image: torch.Tensor, masks: torch.Tensor, L: int = 900, fast: bool = False,
    precision: str = "fp32",
) -> torch.Tensor:
    """Refined foreground probability [K, H, W] for K binary masks of one image.

    image: uint8 [H, W, 3]; masks: bool [K, H, W]. The K masks go through the network as a batch.
    """
    device = next(net.parameters()).device
    h, w = masks.shape[-2:]
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    x = (image.to(device).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
    x = x.expand(len(masks), -1, -1, -1)
    seg = masks.to(device)[:, None].float() * 2 - 1
    with autocast(precision, device):
        out = global_step(net, x, seg, L)
        out = {k: v.float() for k, v in out.items()}
        if not fast:
            pred, _ = local_step(net, x, out, L)
    if fast:
        pred = out["pred_224"]
        if max(h, w) < L:
            pred = F.interpolate(pred, size=(h, w), mode="area")
        elif max(h, w) > L:
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=True)
    return pred[:, 0].float().clamp(0, 1).cpu()
