"""The two things a strategy is made of: an Injector and a Refiner.

Both are `nn.Module`s so that whatever weights they hold follow the LightningModule to
its device; the harness knows nothing else about them. A new strategy is one subclass
and a config entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import nn

from .types import ClassProbs, Generated, Sample


class Injector(nn.Module, ABC):
    """Generates, for each foreground class of each sample, an image that keeps the layout
    of the coarse mask. Gets a whole batch so it can run all classes in one model call."""

    random_weights: bool = False  # set by implementations built on untrained models; reports say so

    @abstractmethod
    def generate(self, samples: Sequence[Sample]) -> list[Generated]: ...


class Refiner(nn.Module, ABC):
    """Turns the current class probabilities of a sample into refined ones.

    `generated` is what the strategy's injector produced for this sample, or None when the
    strategy has no injector; refiners that need it say so with `needs_generated`.
    """

    needs_generated: bool = False
    random_weights: bool = False

    @abstractmethod
    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs: ...


class Chain(Refiner):
    """Refiners run one after another, e.g. the paper's G4Seg then DenseCRF (Table XI)."""

    def __init__(self, refiners: Sequence[Refiner]) -> None:
        super().__init__()
        if not refiners:
            raise ValueError("a Chain needs at least one refiner")
        self.refiners = nn.ModuleList(refiners)
        self.needs_generated = any(r.needs_generated for r in refiners)
        self.random_weights = any(r.random_weights for r in refiners)

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        for refiner in self.refiners:
            probs = refiner.refine(sample, probs, generated)
        return probs
