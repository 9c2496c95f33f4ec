"""The LightningModule: samples in, per-sample results out. Nothing is trained.

One predict step runs, on the module's device:
  1. the coarse stage: a model producer (CLIP segmenter, ...) fills in the coarse masks
     the dataset left empty, batched;
  2. every injector some strategy names, once per batch (G4Seg alone and G4Seg then
     DenseCRF share one generated image per (sample, class));
  3. the refiner chains, identical prefixes once: `g4seg_emi`, `g4seg_emi+crf` and
     `g4seg_emi+sam` run their common Correspondence step once per sample;
  4. per-sample counts of every label source against the ground truth.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import lightning as L
import torch
from torch import nn
from torch.profiler import record_function

from ..errors import ConfigError
from ..evaluation.boundary import DEFAULT_DILATION_RATIO, GroundTruthBoundaries
from ..evaluation.counts import pixel_counts
from ..evaluation.metrics import DEFAULT_EDGES, check_edges
from ..finite import check_finite
from ..interfaces import Chain, CoarseProducer, Injector, Refiner
from ..types import BASELINE, IGNORE_INDEX, AlreadyDone, ClassProbs, Generated, Sample, SampleResult, SourceCounts
from .refiner_pool import RefinerPool

UNCHANGED = "changed no label"


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
    """Runs every strategy on every sample.

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
        self.strata_edges = check_edges(strata_edges)
        if not 0 < boundary_dilation < 1:
            raise ConfigError(f"model.boundary_dilation must be in (0, 1), got {boundary_dilation}")
        self.boundary_dilation = boundary_dilation
        self.producer: CoarseProducer | None = None
        self.steps = self._chain_steps()
        # set by a background writer: its thread assembles the results (label maps, notes, counts,
        # the pool's steps) while the device runs the next batch; otherwise results come finished
        self.defer_results = False
        self.pool: RefinerPool | None = None  # worker processes for the CPU refiners (start_pool)

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

    def _chain_steps(self) -> dict[str, list[tuple]]:
        """Per strategy, the key of each chain prefix: equal keys compute the same thing
        (same refiner classes and settings in the same order, on the same injector's
        images where a refiner of the prefix reads them)."""
        steps = {}
        for spec in self.specs:
            keys, prefix, reads = [], (), False
            for refiner in spec.refiners:
                reads = reads or refiner.needs_generated
                prefix = (*prefix, refiner.identity())
                keys.append((spec.injector if reads else None, prefix))
            steps[spec.name] = keys
        return steps

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.class_names is None:
            if dm is None or not hasattr(dm, "class_names"):
                raise ValueError("G4SegModule needs class_names, or a datamodule that has them")
            self.class_names = list(dm.class_names)
        producer = getattr(dm, "coarse_producer", None)
        if isinstance(producer, CoarseProducer):
            self.producer = producer  # a submodule from here on: Lightning moves it with the module

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Records stay on the CPU; each stage moves what it needs to the module's device."""
        return batch

    def predict_step(self, batch: Sequence[Sample | AlreadyDone], batch_idx: int = 0) -> list[SampleResult]:
        samples = [s for s in batch if isinstance(s, Sample)]
        self.produce_coarse(samples)
        scored = [s for s in samples if not bool((s.gt == IGNORE_INDEX).all())]
        steps = self.start_pooled(scored, {})  # CPU refiners of the coarse masks work while the device generates
        generated, seconds = self.generate(scored)
        steps = self.run_batch(scored, generated, steps)
        scored_ids = {s.id for s in scored}
        results = []
        for sample in samples:
            if sample.id in scored_ids:
                result = self.refine_sample(sample, generated, seconds, steps)
            else:
                result = SampleResult(sample.id, {}, {}, unscored_reason="ground truth is all ignore (255)",
                                      files=sample.files, digests=sample.digests)  # fmt: skip
            results.append(result)
        return results

    @torch.no_grad()
    def produce_coarse(self, samples: list[Sample]) -> None:
        """The coarse stage: model producers fill `coarse` where the dataset left it empty."""
        todo = [s for s in samples if s.coarse is None]
        if not todo:
            return
        if self.producer is None:
            raise ConfigError(f"sample {todo[0].id} has no coarse mask and the datamodule names no coarse producer")
        with record_function("g4seg.coarse"):
            produced = self.producer.produce(todo)
        for sample, coarse in zip(todo, produced):
            check_finite(coarse.probs, self.producer, sample.id, "coarse probabilities")
            sample.coarse = coarse

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
    def run_strategies(self, sample: Sample, generated: dict[str, dict[str, Generated]]
                       ) -> tuple[dict[str, ClassProbs], dict[str, torch.Tensor], dict[str, float]]:  # fmt: skip
        """Every strategy's refined probabilities, label map and refining time for one sample."""
        return self.assemble(sample, self.run_batch([sample], generated))

    def _input_of(self, spec: StrategySpec, depth: int, sample: Sample, steps: dict) -> ClassProbs | None:
        """The probabilities step `depth` of `spec` refines, or None while they are not ready."""
        if depth == 0:
            return sample.coarse
        done = steps.get((sample.id, self.steps[spec.name][depth - 1]))
        return done[0] if done is not None and not isinstance(done, Future) else None

    def start_pooled(self, samples: list[Sample], generated: dict[str, dict[str, Generated]],
                     steps: dict | None = None) -> dict:  # fmt: skip
        """Hands the CPU refiner steps whose input is ready to the worker pool: {(sample id, step key): Future}."""
        steps = {} if steps is None else steps
        if self.pool is None:
            return steps
        for sample in samples:
            for spec in self.specs:
                gen = generated.get(spec.injector, {}).get(sample.id) if spec.injector else None
                for depth, (refiner, key) in enumerate(zip(spec.refiners, self.steps[spec.name])):
                    if (sample.id, key) in steps or not refiner.runs_on_cpu or (refiner.needs_generated and gen is None):
                        continue
                    probs = self._input_of(spec, depth, sample, steps)
                    if probs is not None:
                        steps[(sample.id, key)] = self.pool.submit(self.pool_key(key), sample, probs, gen)
        return steps

    @torch.no_grad()
    def run_batch(self, samples: list[Sample], generated: dict[str, dict[str, Generated]], steps: dict | None = None) -> dict:
        """Every distinct chain prefix of every sample, computed once: {(sample id, step key):
        (probs, seconds) or a Future of the pool}. Steps go depth by depth over the whole
        batch, so the pool's CPU refiners work on every sample while the main process runs
        the device's steps, and into the next batch (the writer thread collects them)."""
        steps = self.start_pooled(samples, generated, steps)
        for depth in range(max(len(spec.refiners) for spec in self.specs)):
            for sample in samples:
                for spec in self.specs:
                    if depth >= len(spec.refiners) or (sample.id, self.steps[spec.name][depth]) in steps:
                        continue
                    probs = self._input_of(spec, depth, sample, steps)
                    if probs is None:  # the previous step is still in the pool
                        probs = self._resolve(spec, depth - 1, sample, steps)[0]
                    gen = generated[spec.injector].get(sample.id) if spec.injector else None
                    start = time.perf_counter()
                    with record_function(f"g4seg.refine.{type(spec.refiners[depth]).__name__}"):
                        refined = spec.refiners[depth].refine(sample, probs, gen)
                    check_finite(refined.probs, spec.refiners[depth], sample.id)
                    steps[(sample.id, self.steps[spec.name][depth])] = (refined, time.perf_counter() - start)
            steps = self.start_pooled(samples, generated, steps)  # the next depth's CPU steps, as inputs finish
        return steps

    def _resolve(self, spec: StrategySpec, depth: int, sample: Sample, steps: dict) -> tuple[ClassProbs, float]:
        key = (sample.id, self.steps[spec.name][depth])
        done = steps[key]
        if isinstance(done, Future):
            done = steps[key] = self.pool.result(done, self._resolve(spec, depth - 1, sample, steps)[0] if depth else sample.coarse)
            check_finite(done[0].probs, spec.refiners[depth], sample.id)
        return done

    def assemble(self, sample: Sample, steps: dict) -> tuple[dict[str, ClassProbs], dict[str, torch.Tensor], dict[str, float]]:
        """Every strategy's refined probabilities, label map and refining time (a shared
        prefix's time counted for every strategy that uses it). A strategy whose labels
        equal the coarse mask's gets the note UNCHANGED (never silently idle), except the
        Identity control."""
        refined, labels, seconds = {}, {}, {}
        coarse = sample.coarse.labels()
        for spec in self.specs:
            total = 0.0
            for depth in range(len(spec.refiners)):
                probs, spent = self._resolve(spec, depth, sample, steps)
                total += spent
            labels[spec.name] = probs.labels()
            if torch.equal(labels[spec.name], coarse) and not all(r.changes_nothing for r in spec.refiners):
                probs = probs.with_probs(probs.probs, UNCHANGED)
            refined[spec.name], seconds[spec.name] = probs, total
        return refined, labels, seconds

    @torch.no_grad()
    def refine_sample(self, sample: Sample, generated: dict[str, dict[str, Generated]], injector_seconds: dict[str, float],
                      steps: dict | None = None) -> SampleResult:  # fmt: skip
        """The sample's result; with `defer_results` its label maps, notes and counts are left
        to `SampleResult.finish` (the writer thread), which also waits for the pool's steps."""
        steps = self.run_batch([sample], generated) if steps is None else steps

        def finish() -> SampleResult:
            labels = {BASELINE: sample.coarse.labels()}
            notes = {BASELINE: list(sample.coarse.notes)} if sample.coarse.notes else {}
            refined_all, refined_labels, seconds = self.assemble(sample, steps)
            for spec in self.specs:
                refined = refined_all[spec.name]
                seconds[spec.name] += injector_seconds.get(spec.injector, 0.0)
                if refined.size != sample.size:
                    raise RuntimeError(f"strategy {spec.name!r} returned {refined.size} for sample {sample.id} of {sample.size}")
                own = [n for n in refined.notes if n not in sample.coarse.notes]
                labels[spec.name] = refined_labels[spec.name]
                if own:
                    notes[spec.name] = own
            counts = sample_counts(labels, sample.gt, len(sample.class_names), self.boundary_dilation)
            return SampleResult(sample.id, labels, counts, seconds=seconds, notes=notes)

        result = SampleResult(
            id=sample.id,
            labels={},
            counts={},
            generated={spec.injector: generated[spec.injector][sample.id] for spec in self.specs
                       if spec.injector and sample.id in generated[spec.injector]},  # fmt: skip
            random_weights=[spec.name for spec in self.specs if self.uses_random_weights(spec)],
            files=sample.files,
            digests=sample.digests,
            pending=finish,
        )
        return result if self.defer_results else result.finish()

    @staticmethod
    def pool_key(key: tuple) -> str:
        return repr(key)

    def pooled_refiners(self) -> dict[str, Refiner]:
        """The CPU refiners of the run, by the key of the chain step they compute."""
        return {self.pool_key(key): refiner for spec in self.specs for refiner, key in zip(spec.refiners, self.steps[spec.name])
                if refiner.runs_on_cpu}  # fmt: skip

    def start_pool(self, workers: int) -> None:
        """Starts `workers` processes for the CPU refiners (none when no refiner runs on the CPU)."""
        refiners = self.pooled_refiners()
        if workers > 0 and refiners and self.pool is None:
            self.pool = RefinerPool(refiners, workers)

    def stop_pool(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def uses_random_weights(self, spec: StrategySpec) -> bool:
        injector = self.injectors[spec.injector] if spec.injector else None
        return self.chains[spec.name].random_weights or bool(injector and injector.random_weights)


def sample_counts(labels: dict[str, torch.Tensor], gt: torch.Tensor, num_classes: int,
                  dilation: float) -> dict[str, SourceCounts]:  # fmt: skip
    """Every source's counts against the ground truth, its boundary side computed once."""
    boundaries = GroundTruthBoundaries(gt.numpy(), dilation)
    return {source: pixel_counts(pred, gt, num_classes, boundaries) for source, pred in labels.items()}
