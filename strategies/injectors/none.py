"""Plain one-step regeneration with no layout injection (the ablation baseline)."""

from __future__ import annotations

from .generation import DiffusionInjector


class NoInjection(DiffusionInjector):
    """Only the prompt carries the class; the coarse mask plays no part in generation."""
