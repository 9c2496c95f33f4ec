"""Injectors: each generates a layout-keeping image per class of a sample."""

from .attention import AttentionInjection
from .controlnet import ControlNetInjection
from .generation import DiffusionInjector
from .none import NoInjection

__all__ = ["AttentionInjection", "ControlNetInjection", "DiffusionInjector", "NoInjection"]
