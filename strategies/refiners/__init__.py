"""Refiners: each turns class probabilities into refined ones."""

from .correspondence import Correspondence
from .densecrf import DenseCRF
from .identity import Identity

__all__ = ["Correspondence", "DenseCRF", "Identity"]
