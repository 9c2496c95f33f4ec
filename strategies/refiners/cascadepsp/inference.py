"""CascadePSP inference: a global step on the whole image resized to max side L, then a
local step on L x L crops at full resolution (skipped with `fast`).

Follows the released procedure: inputs padded to a multiple of 8 (mask padding -1); crops
with stride L/2 - 32 and 16 px of each inner border dropped; crops whose coarse foreground
fraction is above 0.9 or below 0.1 are skipped; overlaps are averaged; pixels no crop
covered keep the global result (binarised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import RefinementNetwork

PAD = 16


def resize_max_side(x: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


def padded_forward(net: RefinementNetwork, image, seg, inter_s8=None, inter_s4=None) -> dict[str, torch.Tensor]:
    """Pads to a multiple of 8 (image 0, masks -1) and crops the outputs back."""
    h, w = seg.shape[-2:]
    ph, pw = -h % 8, -w % 8
    if ph or pw:
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
    """L x L windows (clipped to the image) covering it with stride L/2 - 2*16."""
    step = max(1, L // 2 - 2 * PAD)
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
    """Full-resolution refinement from the global result; returns it and the crops run."""
    h, w = image.shape[-2:]
    full_224 = (F.interpolate(global_out["pred_224"], size=(h, w), mode="bilinear", align_corners=False) > 0.5)
    seg_224 = full_224.float() * 2 - 1
    seg_56 = F.interpolate(global_out["pred_56_2"], size=(h, w), mode="bilinear", align_corners=False) * 2 - 1
    total = torch.zeros_like(seg_224)
    weight = torch.zeros_like(seg_224)
    ran = 0
    for c in crop_grid(h, w, L):
        part = seg_224[..., c.y0 : c.y1, c.x0 : c.x1]
        fraction = float((part > 0).float().mean())
        if fraction > 0.9 or fraction < 0.1:
            continue
        pred = padded_forward(net, image[..., c.y0 : c.y1, c.x0 : c.x1], part, part,
                              seg_56[..., c.y0 : c.y1, c.x0 : c.x1])["pred_224"]  # fmt: skip
        ran += 1
        # drop PAD pixels along every border that is not the image's own
        ys = PAD if c.y0 else 0
        ye = (c.y1 - c.y0) - (PAD if c.y1 != h else 0)
        xs = PAD if c.x0 else 0
        xe = (c.x1 - c.x0) - (PAD if c.x1 != w else 0)
        total[..., c.y0 + ys : c.y0 + ye, c.x0 + xs : c.x0 + xe] += pred[..., ys:ye, xs:xe]
        weight[..., c.y0 + ys : c.y0 + ye, c.x0 + xs : c.x0 + xe] += 1
    result = torch.where(weight > 0, total / weight.clamp(min=1), seg_224 / 2 + 0.5)
    return result, ran


@torch.no_grad()
def refine_masks(
    net: RefinementNetwork, image: torch.Tensor, masks: torch.Tensor, L: int = 900, fast: bool = False
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
    out = global_step(net, x, seg, L)
    if fast:
        pred = out["pred_224"]
        mode = "area" if max(h, w) < L else "bilinear"
        kwargs = {"align_corners": True} if mode == "bilinear" else {}
        pred = F.interpolate(pred, size=(h, w), mode=mode, **kwargs) if pred.shape[-2:] != (h, w) else pred
    else:
        pred, _ = local_step(net, x, out, L)
    return pred[:, 0].clamp(0, 1).cpu()
