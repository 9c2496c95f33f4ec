"""One meaning of `precision` for every part that runs a model (injectors, refiners).

Autocast rather than casting the weights: the reference systems run fp32 (CascadePSP, SAM,
CLIP) or fp16 (Stable Diffusion), and autocast keeps the numerically touchy ops (softmax,
norms, reductions) in fp32 while matrix products and convolutions take the fast path. A
part's output leaves in fp32 whatever ran inside, so a chain never mixes dtypes.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def check_precision(owner: str, precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"{owner} precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means fp32. "auto" is fp16 on a GPU and fp32 elsewhere (fp16 matrix products
    on a CPU are slow and bf16 there is an explicit choice)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return DTYPES[precision]


def autocast(precision: str, device: torch.device):
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
