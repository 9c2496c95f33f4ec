"""Refiners: each turns class probabilities into refined ones."""

from .cascadepsp import CascadePSP
from .correspondence import Correspondence
from .densecrf import DenseCRF
from .identity import Identity
from .pamr import PAMR
from .sam import SAMRefiner
from .segrefiner import SegRefiner

__all__ = ["CascadePSP", "Correspondence", "DenseCRF", "Identity", "PAMR", "SAMRefiner", "SegRefiner"]
