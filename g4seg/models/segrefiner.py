"""SegRefiner's denoising network (Wang et al., NeurIPS 2023), written from its paper and code.

An improved-DDPM U-Net on 4 channels (normalised RGB + the current mask) that predicts the
mask's logits at a timestep. Module names follow the release (`DenoiseUNet` of
`mmdet/models/dense_heads/diffusion_unet_head.py`), so its checkpoints (mmdet files whose
`state_dict` keys start with "denoise_model.") load with `strict=True`. What it keeps from
iDDPM and a plain U-Net would not: GroupNorm of 32 groups computed in float32, a learned
embedding per timestep (`learn_time_embd`, the released setting) instead of sinusoids, and
the "legacy" attention head split (heads interleaved in the qkv channels).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import hub

SEGREFINER_GET = ("segrefiner_hr_latest.pth (HR-SegRefiner, the semantic model) or segrefiner_lr_latest.pth "
                  "from the Google Drive links in the 'Evaluation' section of github.com/MengyuWang826/SegRefiner")  # fmt: skip
PREFIX = "denoise_model."  # the detector's attribute holding the network in the released files


@dataclass(frozen=True)
class UNetConfig:
    """The `denoise_model` entry of the released configs (configs/segrefiner/segrefiner_lr.py)."""

    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_strides: tuple[int, ...] = (16, 32)
    num_heads: int = 4
    learn_time_embd: bool = True
    num_timesteps: int = 6  # rows of the learned embedding (the diffusion's step count)
    in_channels: int = 4
    out_channels: int = 1

    @property
    def stride(self) -> int:
        """Input sides must be multiples of this (the U-Net's total downsampling)."""
        return 2 ** (len(self.channel_mult) - 1)


TINY_CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 1, 1, 2), num_res_blocks=1, attention_strides=(8,), num_heads=2)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).type(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """iDDPM's timestep embedding: cosines then sines, a zero column for odd dims."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out = out_channels or channels
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out))
        # Dropout (p=0 in every released config) keeps the release's indices: out_layers.3 is the conv
        self.out_layers = nn.Sequential(_norm(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over positions; heads split the qkv channels as [head, (q, k, v), ch]."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.num_heads, 3 * c // self.num_heads, -1)
        q, k, v = (t.transpose(1, 2) for t in qkv.chunk(3, dim=1))  # [b*heads, T, ch]
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Passes the timestep embedding to the residual blocks only."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class DenoiseUNet(nn.Module):
    """Logits [N, out_channels, H, W] of the clean mask from (image ++ mask) [N, 4, H, W] and
    integer timesteps [N]; H and W multiples of `config.stride`."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        ch, emb = c.model_channels, c.model_channels * 4
        if c.learn_time_embd:
            self.time_embed = nn.Embedding(c.num_timesteps, emb)
        else:
            self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, mult * c.model_channels)]
                ch = mult * c.model_channels
                if ds in c.attention_strides:
                    layers.append(AttentionBlock(ch, c.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(ResBlock(ch, emb), AttentionBlock(ch, c.num_heads), ResBlock(ch, emb))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, c.model_channels * mult)]
                ch = c.model_channels * mult
                if ds in c.attention_strides:
                    layers.append(AttentionBlock(ch, c.num_heads))
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(c.model_channels, c.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.config.learn_time_embd:
            emb = self.time_embed(t)
        else:
            emb = self.time_embed(sinusoidal(t, self.config.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def release_state(state: dict) -> dict:
    """The network's tensors from a released file: an mmdet checkpoint ({"state_dict": ...,
    "meta": ...}) or a bare state dict, with or without the detector's "denoise_model." and
    DataParallel's "module." prefixes."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(PREFIX) for k in state):
        state = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def load_weights(net: DenoiseUNet, path: str) -> None:
    """A released .pth (read with weights_only: tensors and plain data only) or a .safetensors
    conversion, strictly; a file of another shape says which config it needs."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}")
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise hub.missing(path, f"not a readable SegRefiner checkpoint ({hub.why(e)})",
                          "a SegRefiner checkpoint", SEGREFINER_GET, "weights") from None  # fmt: skip
    try:
        net.load_state_dict(release_state(state), strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{path}: does not fit a SegRefiner network of {asdict(net.config)} ({hub.mismatch_line(e)}); "
                          "set the network settings to the checkpoint's (released: the defaults)") from None  # fmt: skip


def save_safetensors(path: str, out: str) -> None:
    """A released .pth rewritten as the network's bare tensors (no pickle needed to read it)."""
    from safetensors.torch import save_file

    state = release_state(torch.load(path, map_location="cpu", weights_only=True))
    save_file({k: v.contiguous() for k, v in state.items()}, out)


def shared_network(weights: str, config: UNetConfig) -> DenoiseUNet:
    """One network per checkpoint in a process (SegRefiner alone and chained after G4Seg share it)."""

    def load() -> DenoiseUNet:
        if weights == "tiny":
            from .tiny import tiny_segrefiner

            return tiny_segrefiner().eval().requires_grad_(False)
        hub.require_local(weights, "file", "the SegRefiner checkpoint", SEGREFINER_GET, "weights")
        if Path(weights).suffix not in (".pth", ".pt", ".safetensors", ".bin"):
            raise ConfigError(f"{weights}: a SegRefiner checkpoint is a .pth (as released) or a .safetensors file")
        net = DenoiseUNet(config)
        load_weights(net, str(weights))
        return net.eval().requires_grad_(False)

    return hub.shared("segrefiner", (weights,), load, *(() if weights == "tiny" else (config,)))
