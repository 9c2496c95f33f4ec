"""The parts a comparison is made of: coarse producers, injectors and refiners.

All are `nn.Module`s so that whatever weights they hold follow the LightningModule to its
device; the harness knows nothing else about them. A new one is one subclass and a config
entry. Each remembers the arguments it was built with (`settings`), so that the module
can tell two equal refiners apart from two different ones (identical chain prefixes are
computed once) and the run folder can state what ran.
"""

from __future__ import annotations

import functools
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import nn

from .types import ClassProbs, Generated, Sample


class Configured(nn.Module):
    """Records the constructor arguments of the most derived class, defaults filled in."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if "_settings" not in self.__dict__:  # the outermost (most derived) constructor
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                settings = {}
                for name, value in list(bound.arguments.items())[1:]:
                    if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        settings.update(value)
                    else:
                        settings[name] = value
                object.__setattr__(self, "_settings", settings)
            init(self, *args, **kw)

        cls.__init__ = recording_init

    @property
    def settings(self) -> dict:
        return dict(self.__dict__.get("_settings", {}))

    def resolved(self) -> dict:
        """The settings that ran, presets and defaults resolved (run.json records these)."""
        return self.settings

    def identity(self) -> str:
        """Class and settings: two parts with equal identities compute the same thing."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}" + json.dumps(self.resolved(), sort_keys=True, default=_identity)


def _identity(value) -> str:
    return value.identity() if isinstance(value, Configured) else repr(value)


class Injector(Configured, ABC):
    """Generates, for each foreground class of each sample, an image that keeps the layout
    of the coarse mask. Gets a whole batch so it can run all classes in one model call."""

    random_weights: bool = False  # set by implementations built on untrained models; reports say so

    @abstractmethod
    def generate(self, samples: Sequence[Sample]) -> list[Generated]: ...


class Refiner(Configured, ABC):
    """Turns the current class probabilities of a sample into refined ones.

    `generated` is what the strategy's injector produced for this sample, or None when the
    strategy has no injector; refiners that need it say so with `needs_generated`.
    """

    needs_generated: bool = False
    random_weights: bool = False
    changes_nothing: bool = False  # the control (Identity): its unchanged output is not worth a note
    runs_on_cpu: bool = False  # CPU code (DenseCRF): run in the worker pool, beside the device's work

    @abstractmethod
    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs: ...


class CoarseProducer(Configured, ABC):
    """Coarse masks computed by a model (a CLIP segmenter, ...). The module runs it as its
    first stage, on its own device and under Lightning's placement, on a batch of samples
    whose `coarse` is still None; file readers and synthetic degradation stay in the
    dataset, where they cost no device time."""

    random_weights: bool = False

    @abstractmethod
    def produce(self, samples: Sequence[Sample]) -> list[ClassProbs]: ...


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
