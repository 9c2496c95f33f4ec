"""g4seg: compare mask-refinement strategies on coarse segmentation masks (see README)."""

from .api import load_strategy, refine

__all__ = ["load_strategy", "refine"]
