"""Refiners: each turns class probabilities into refined ones."""

from .densecrf import DenseCRF
from .identity import Identity

__all__ = ["DenseCRF", "Identity"]
