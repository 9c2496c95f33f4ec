"""The guard on model outputs that become masks: a model with NaN or infinite weights (a
corrupt download, a diverged fine-tuning) otherwise runs to the end and reports numbers
(argmax over NaN is a class too), which nobody would question. One line names the model
and its weights instead."""

from __future__ import annotations

import torch

from .errors import DataError

WEIGHT_KEYS = ("weights", "model", "pretrained", "controlnet", "clip")


class NonFiniteOutput(DataError):
    """A model produced NaN or infinite values."""


def settings_of(component) -> dict:
    return getattr(component, "settings", None) or {}


def weights_of(component) -> str:
    """The part and the weights it was built from, as its settings name them."""
    settings = settings_of(component)
    named = [f"{k}: {settings[k]}" for k in WEIGHT_KEYS if isinstance(settings.get(k), str)]
    return f"{type(component).__name__} ({', '.join(named)})" if named else type(component).__name__


def check_finite(values: torch.Tensor, component, sample_ids: str | list[str], what: str = "probabilities") -> None:
    """`values` [N, ...] of N samples (or one sample's, with one id): the first bad one is named."""
    ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
    finite = torch.isfinite(values.reshape(len(ids), -1)).all(1).cpu()
    if not bool(finite.all()):
        bad = ids[int((~finite).nonzero()[0])]
        half = settings_of(component).get("precision") in ("fp16", "auto")
        hint = " or float16 overflowed (try precision: fp32 or bf16)" if half else ""
        raise NonFiniteOutput(f"{weights_of(component)} produced NaN or infinite {what} on sample {bad!r}; its "
                              f"weights are likely corrupt (check or download them again){hint}")  # fmt: skip
