"""The control: refined = coarse. Its gain must read 0 in every report."""

from __future__ import annotations

from g4seg.interfaces import Refiner
from g4seg.types import ClassProbs, Generated, Sample


class Identity(Refiner):
    changes_nothing = True

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        return probs
