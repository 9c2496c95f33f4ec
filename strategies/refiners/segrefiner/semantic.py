"""SegRefiner's semantic (high-resolution) procedure, as `SegRefinerSemantic.simple_test_semantic`
of the release runs it on one mask:

1. masks of at most 128 pixels come back empty;
2. global step: image and mask resized (nearest) to the model size, all timesteps but the
   last, the result resized (nearest) back and thresholded at 0.5;
3. local step: every model-size pixel whose fine probability is under `fine_prob_thr` x the
   maximum proposes a model-size window centred on it (scaled to the image, shifted inside
   it), scored 1 - fine probability; NMS at `iou_thr`; windows whose thresholded mask is all
   foreground or all background are dropped; the last timestep runs on the rest (image,
   mask and fine probability cropped at full resolution), `batch_max` windows per call;
4. the windows' sigmoids are averaged where they overlap and thresholded; pixels no window
   covers keep the global result.

Deviation: an image side shorter than the model size gets windows of that side (the release
would index from a negative start there); they are padded to the model size for the network
and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import nms

from g4seg.models.segrefiner import DenoiseUNet

from .diffusion import Schedule, p_sample_loop

MIN_PIXELS = 128  # the release's early exit: such masks come back empty


@dataclass(frozen=True)
class TestConfig:
    """`test_cfg` of configs/segrefiner/segrefiner_big.py (the semantic model's test config)."""

    model_size: int = 256
    fine_prob_thr: float = 0.9
    iou_thr: float = 0.3
    batch_max: int = 32


@dataclass(frozen=True)
class Window:
    x0: int
    y0: int
    x1: int
    y1: int


def window_boxes(fine: torch.Tensor, size: tuple[int, int], cfg: TestConfig) -> list[Window]:
    """Windows around the low-confidence points of a model-size fine probability [s, s], kept by NMS."""
    h, w = size
    s = cfg.model_size
    low = fine < fine.max().item() * cfg.fine_prob_thr
    scores = 1 - fine[low]
    yc, xc = torch.where(low)
    yc, xc = (yc * (h / s)).int(), (xc * (w / s)).int()
    y0, y1 = _inside(yc - s / 2, yc + s / 2, h, s)
    x0, x1 = _inside(xc - s / 2, xc + s / 2, w, s)
    boxes = torch.stack((x0, y0, x1, y1), dim=-1).float()
    keep = nms(boxes, scores.float(), cfg.iou_thr)
    return [Window(*(int(v) for v in boxes[i].tolist())) for i in keep]


def _inside(lo: torch.Tensor, hi: torch.Tensor, side: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift windows of length s inside [0, side] (the release's rule), clipped where side < s."""
    under = lo < 0
    lo, hi = torch.where(under, 0.0, lo), torch.where(under, float(s), hi)
    over = hi > side
    lo, hi = torch.where(over, float(side - s), lo), torch.where(over, float(side), hi)
    return lo.clamp(min=0), hi


def mixed(windows: list[Window], mask: torch.Tensor) -> list[Window]:
    """Windows whose binary mask [H, W] is neither all foreground nor all background."""
    out = []
    for b in windows:
        patch = mask[b.y0:b.y1, b.x0:b.x1]
        if patch.any() and not patch.all():
            out.append(b)
    return out


def paste(local: list[torch.Tensor], windows: list[Window], global_soft: torch.Tensor) -> torch.Tensor:
    """Overlapping windows averaged; uncovered pixels keep the global (soft) result. Thresholded at
    0.5 this is the release's mask."""
    total = torch.zeros_like(global_soft)
    count = torch.zeros_like(global_soft)
    for p, b in zip(local, windows):
        total[b.y0:b.y1, b.x0:b.x1] += p
        count[b.y0:b.y1, b.x0:b.x1] += 1
    return torch.where(count > 0, total / count.clamp(min=1), global_soft)


def _padded(t: torch.Tensor, s: int) -> torch.Tensor:
    return F.pad(t, (0, s - t.shape[-1], 0, s - t.shape[-2]))


def refine_semantic(net: DenoiseUNet, schedule: Schedule, cfg: TestConfig, image: torch.Tensor,
                    masks: torch.Tensor, generators: list[torch.Generator]) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """Soft refined masks [K, H, W] (>= 0.5 is the release's binary mask) and the indices of
    the masks of at most MIN_PIXELS pixels (returned as zeros).

    image: normalised [3, H, W] on the network's device; masks: bool [K, H, W]; one CPU
    generator per mask for the global step's transition noise.
    """
    k, h, w = masks.shape
    s, device = cfg.model_size, image.device
    out = torch.zeros(k, h, w)
    tiny = [i for i in range(k) if int(masks[i].sum()) <= MIN_PIXELS]
    todo = [i for i in range(k) if i not in tiny]
    if not todo:
        return out, tiny
    steps = list(range(schedule.num_timesteps))[::-1]
    g_image = F.interpolate(image[None], size=(s, s))
    g_masks = (F.interpolate(masks[todo, None].float().to(device), size=(s, s)) >= 0.5).float()
    soft, fine = [], []
    for a in range(0, len(todo), cfg.batch_max):
        b = slice(a, a + cfg.batch_max)
        x, f = p_sample_loop(net, schedule, g_image.expand(len(g_masks[b]), -1, -1, -1), g_masks[b], None,
                             steps[:-1], [generators[i] for i in todo[b]])  # fmt: skip
        soft.append(x)
        fine.append(f)
    global_soft = F.interpolate(torch.cat(soft), size=(h, w)).float()
    global_mask = (global_soft >= 0.5).float()  # the release's ori_size_mask
    fine_s = torch.cat(fine).float()
    fine_full = F.interpolate(fine_s, size=(h, w))
    jobs: list[tuple[int, Window]] = []
    for j in range(len(todo)):
        jobs += [(j, b) for b in mixed(window_boxes(fine_s[j, 0], (h, w), cfg), global_mask[j, 0].bool())]
    local = []
    for a in range(0, len(jobs), cfg.batch_max):
        chunk = jobs[a:a + cfg.batch_max]
        crop = [(j, (slice(b.y0, b.y1), slice(b.x0, b.x1))) for j, b in chunk]
        img = torch.stack([_padded(image[:, ys, xs], s) for _, (ys, xs) in crop])
        msk = torch.stack([_padded(global_mask[j, :, ys, xs], s) for j, (ys, xs) in crop])
        fin = torch.stack([_padded(fine_full[j, :, ys, xs], s) for j, (ys, xs) in crop])
        x, _ = p_sample_loop(net, schedule, img, msk, fin, steps[-1:])
        local += [x[n, 0, : b.y1 - b.y0, : b.x1 - b.x0].float() for n, (_, b) in enumerate(chunk)]
    for j, i in enumerate(todo):
        mine = [n for n, (jj, _) in enumerate(jobs) if jj == j]
        out[i] = paste([local[n] for n in mine], [jobs[n][1] for n in mine], global_soft[j, 0]).cpu()
    return out, tiny
