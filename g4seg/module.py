"""The LightningModule: strategies in, per-sample results out. Nothing is trained.

A strategy is a named refiner chain with an optional injector. Injectors are named
separately so that several strategies (G4Seg alone, G4Seg then DenseCRF, ...) share one
generated image per (sample, class) instead of regenerating it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
from torch import nn

from .boundary import DEFAULT_DILATION_RATIO, GroundTruthBoundaries
from .errors import ConfigError
from .interfaces import Chain, Injector, Refiner
from .metrics import DEFAULT_EDGES, StrategyMetrics, initial_ious, pixel_counts
from .types import BASELINE, IGNORE_INDEX, AlreadyDone, Generated, Sample, SampleResult


@dataclass
class StrategySpec:
    """One row of the comparison: `refiners` run in order on the output of `injector`.

    Args:
        name: column name in tables, folder name of its masks.
        refiners: the chain (one entry for a single refiner).
        injector: key into the module's `injectors`, or None for image-only refiners.
    """

    name: str
    refiners: list[Refiner] = field(default_factory=list)
    injector: str | None = None


class G4SegModule(L.LightningModule):
    """Runs every strategy on every sample and scores them against the coarse baseline.

    Args:
        strategies: the strategies to compare.
        injectors: named injectors the strategies refer to.
        class_names: dataset classes; taken from the datamodule when not given.
        strata_edges: initial-IoU edges (percent) of the quality strata.
        boundary_dilation: Boundary IoU's dilation ratio (of the image diagonal; 0.02 as
            the boundary-iou-api).
    """

    def __init__(
        self,
        strategies: list[StrategySpec],
        injectors: dict[str, Injector] | None = None,
        class_names: list[str] | None = None,
        strata_edges: list[float] = list(DEFAULT_EDGES),
        boundary_dilation: float = DEFAULT_DILATION_RATIO,
    ) -> None:
        super().__init__()
        self.injectors = nn.ModuleDict(injectors or {})
        self.specs = list(strategies)
        self._check_specs()
        self.chains = nn.ModuleDict({s.name: Chain(s.refiners) for s in self.specs})
        self.class_names = class_names
        self.strata_edges = list(strata_edges)
        if not 0 < boundary_dilation < 1:
            raise ConfigError(f"model.boundary_dilation must be in (0, 1), got {boundary_dilation}")
        self.boundary_dilation = boundary_dilation
        self.metrics: StrategyMetrics | None = None
        if class_names is not None:
            self.metrics = StrategyMetrics(self.strategy_names, len(class_names), self.strata_edges)

    @property
    def strategy_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def _check_specs(self) -> None:
        if not self.specs:
            raise ConfigError("configure at least one strategy (model.strategies)")
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names) or BASELINE in names:
            raise ConfigError(f"strategy names must be unique and not {BASELINE!r}: {names}")
        for name in [*names, *self.injectors]:
            if not name or "." in name or "/" in name:
                raise ConfigError(f"strategy and injector names must be non-empty without '.' or '/': {name!r}")
        for s in self.specs:
            if not s.refiners:
                raise ConfigError(f"strategy {s.name!r} has no refiners (use Identity for a pass-through)")
            if s.injector is not None and s.injector not in self.injectors:
                raise ConfigError(f"strategy {s.name!r} names injector {s.injector!r}; known: {sorted(self.injectors)}")
            if s.injector is None and any(r.needs_generated for r in s.refiners):
                raise ConfigError(f"strategy {s.name!r} has a refiner that needs generated images but no injector")

    def setup(self, stage: str) -> None:
        if self.class_names is None:
            dm = getattr(self.trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "class_names"):
                raise ValueError("G4SegModule needs class_names, or a datamodule that has them")
            self.class_names = list(dm.class_names)
        if self.metrics is None:
            self.metrics = StrategyMetrics(self.strategy_names, len(self.class_names), self.strata_edges)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Records stay on the CPU; each strategy moves what it needs to its own device."""
        return batch

    def predict_step(self, batch: Sequence[Sample | AlreadyDone], batch_idx: int = 0) -> list[SampleResult]:
        samples = [s for s in batch if isinstance(s, Sample)]
        scored = [s for s in samples if not bool((s.gt == IGNORE_INDEX).all())]
        generated, seconds = self.generate(scored)
        scored_ids = {s.id for s in scored}
        results = []
        for sample in samples:
            if sample.id in scored_ids:
                result = self.refine_sample(sample, generated, seconds)
            else:
                result = SampleResult(sample.id, {}, {}, {}, unscored_reason="ground truth is all ignore (255)")
            results.append(result)
        return results

    @torch.no_grad()
    def generate(self, samples: list[Sample]) -> tuple[dict[str, dict[str, Generated]], dict[str, float]]:
        """Every injector that some strategy uses, once, on the whole batch."""
        generated: dict[str, dict[str, Generated]] = {}
        seconds: dict[str, float] = {}
        for name in dict.fromkeys(s.injector for s in self.specs if s.injector is not None):
            start = time.perf_counter()
            out = self.injectors[name].generate(samples) if samples else []
            seconds[name] = (time.perf_counter() - start) / max(1, len(samples))
            for g in out:
                g.injector = name
            generated[name] = {g.sample_id: g for g in out}
        return generated, seconds

    @torch.no_grad()
    def refine_sample(
        self, sample: Sample, generated: dict[str, dict[str, Generated]], injector_seconds: dict[str, float]
    ) -> SampleResult:
        n = len(sample.class_names)
        labels = {BASELINE: sample.coarse.labels()}
        boundaries = GroundTruthBoundaries(sample.gt.numpy(), self.boundary_dilation)
        counts = {BASELINE: pixel_counts(labels[BASELINE], sample.gt, n, boundaries)}
        seconds: dict[str, float] = {}
        notes = {BASELINE: list(sample.coarse.notes)} if sample.coarse.notes else {}
        for spec in self.specs:
            gen = generated[spec.injector].get(sample.id) if spec.injector else None
            start = time.perf_counter()
            refined = self.chains[spec.name].refine(sample, sample.coarse, gen)
            seconds[spec.name] = time.perf_counter() - start + injector_seconds.get(spec.injector, 0.0)
            if refined.size != sample.size:
                raise RuntimeError(f"strategy {spec.name!r} returned {refined.size} for sample {sample.id} of {sample.size}")
            own = [n for n in refined.notes if n not in sample.coarse.notes]
            if own:
                notes[spec.name] = own
            labels[spec.name] = refined.labels()
            counts[spec.name] = pixel_counts(labels[spec.name], sample.gt, n, boundaries)
        return SampleResult(
            id=sample.id,
            labels=labels,
            counts=counts,
            initial_iou=initial_ious(counts[BASELINE]),
            generated={spec.injector: generated[spec.injector][sample.id] for spec in self.specs
                       if spec.injector and sample.id in generated[spec.injector]},
            seconds=seconds,
            random_weights=[spec.name for spec in self.specs if self.uses_random_weights(spec)],
            notes=notes,
        )

    def uses_random_weights(self, spec: StrategySpec) -> bool:
        injector = self.injectors[spec.injector] if spec.injector else None
        return self.chains[spec.name].random_weights or bool(injector and injector.random_weights)
