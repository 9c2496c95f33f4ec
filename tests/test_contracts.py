"""One contract for every extension point (as diffusers' SchedulerCommonTest or torchmetrics'
MetricTester do for theirs): each Refiner, Injector and CoarseProducer the packages export,
built on its tiny model, keeps the shapes and ids of what it is given, gives finite values in
[0, 1], answers the same twice, does not depend on the other samples of its batch, leaves
its input alone and states its settings. A new class without an entry here fails the
coverage test, so no part escapes the contract."""

from __future__ import annotations

import json

import pytest
import torch

import datamodules
import strategies.injectors as injectors
import strategies.refiners as refiners
from datamodules import VOCFolderDataModule
from g4seg.interfaces import CoarseProducer, Injector, Refiner

REFINERS = {
    "Identity": lambda: refiners.Identity(),
    "DenseCRF": lambda: refiners.DenseCRF(),
    "PAMR": lambda: refiners.PAMR(),
    "CascadePSP": lambda: refiners.CascadePSP(weights="tiny"),
    "SegRefiner": lambda: refiners.SegRefiner(model_size=32),
    "SAMRefiner": lambda: refiners.SAMRefiner(model="tiny", iterations=1),
    "Correspondence": lambda: refiners.Correspondence(clip="tiny"),
}
INJECTORS = {
    "NoInjection": lambda: injectors.NoInjection(model="tiny"),
    "AttentionInjection": lambda: injectors.AttentionInjection(model="tiny", alpha=10.0),
    "AttentionInjection-densediffusion": lambda: injectors.AttentionInjection(model="tiny", mode="densediffusion"),
    "AttentionInjection-sd3": lambda: injectors.AttentionInjection(model="tiny-sd3", alpha=10.0),
    "ControlNetInjection": lambda: injectors.ControlNetInjection(model="tiny", controlnet="tiny"),
}
PRODUCERS = {
    "SCLIP": lambda: datamodules.SCLIP(clip="tiny"),
    "MaskCLIP": lambda: datamodules.MaskCLIP(clip="tiny", pipeline="sclip"),
    "ClearCLIP": lambda: datamodules.ClearCLIP(clip="tiny"),
    "CLIPES": lambda: datamodules.CLIPES(clip="tiny"),
    "HFSegmenter": lambda: datamodules.HFSegmenter(model="tiny-segformer"),
}


def exported(module, base) -> set[str]:
    """The concrete classes a package exports (a base others derive from, DiffusionInjector, is not one)."""
    classes = {n: getattr(module, n) for n in module.__all__ if isinstance(getattr(module, n), type)}
    parts = {n: c for n, c in classes.items() if issubclass(c, base) and not getattr(c, "__abstractmethods__", None)}
    return {n for n, c in parts.items() if not any(o is not c and issubclass(o, c) for o in parts.values())}


def test_every_exported_part_has_a_contract_entry():
    assert exported(refiners, Refiner) == set(REFINERS)
    assert exported(injectors, Injector) == {n.split("-")[0] for n in INJECTORS}
    assert exported(datamodules, CoarseProducer) == set(PRODUCERS)


@pytest.fixture(scope="module")
def samples(demo_root):
    dm = VOCFolderDataModule(str(demo_root), limit=2)
    dm.setup()
    return [dm.dataset[i] for i in range(2)]


@pytest.fixture(scope="module")
def generated(samples):
    return {g.sample_id: g for g in injectors.NoInjection(model="tiny").generate(samples)}


def check_probs(out, like, size) -> None:
    assert out.probs.dtype == torch.float32 and tuple(out.probs.shape[1:]) == tuple(size)
    assert len(out.class_ids) == len(out.probs) and int(out.class_ids[0]) == 0
    assert bool(torch.isfinite(out.probs).all()) and float(out.probs.min()) >= 0 and float(out.probs.max()) <= 1 + 1e-5
    if like is not None:
        assert torch.equal(out.class_ids, like.class_ids)


def check_settings(part) -> None:
    json.loads(json.dumps(part.resolved(), default=str))
    assert part.identity() == part.identity() and type(part).__name__ in part.identity()


SLOW = {"SAMRefiner", "SegRefiner", "CascadePSP"}  # their own suites run them too; the fast loop leaves them out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(REFINERS)])
def test_refiner_contract(name, samples, generated):
    refiner = REFINERS[name]()
    check_settings(refiner)
    a, b = samples
    gen = (lambda s: generated[s.id]) if refiner.needs_generated else (lambda s: None)
    before = a.coarse.probs.clone()
    out = refiner.refine(a, a.coarse, gen(a))
    assert torch.equal(a.coarse.probs, before)  # the input is not changed in place
    check_probs(out, a.coarse, a.size)
    refiner.refine(b, b.coarse, gen(b))  # another sample in between leaves nothing behind
    again = refiner.refine(a, a.coarse, gen(a))
    torch.testing.assert_close(again.probs, out.probs, atol=1e-5, rtol=0)  # and the same answer twice


@pytest.mark.parametrize("name", sorted(INJECTORS))
def test_injector_contract(name, samples):
    injector = INJECTORS[name]()
    check_settings(injector)
    together = {g.sample_id: g for g in injector.generate(samples)}
    for s in samples:
        (alone,) = injector.generate([s])
        g = together[s.id]
        assert g.class_ids == [c for _, c in s.coarse.foreground()] == alone.class_ids
        assert g.images.dtype == torch.uint8 and tuple(g.images.shape) == (len(g.class_ids), *s.size, 3)
        diff = (g.images.int() - alone.images.int()).abs()
        assert int(diff.max()) <= 2 and float((diff > 0).float().mean()) < 0.01  # batch = single, up to rounding


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_producer_contract(name, samples):
    producer = PRODUCERS[name]()
    check_settings(producer)
    together = producer.produce(samples)
    for s, out in zip(samples, together):
        check_probs(out, None, s.size)
        assert torch.equal(out.class_ids, torch.sort(out.class_ids).values) and len(set(out.class_ids.tolist())) == len(out.class_ids)
        (alone,) = producer.produce([s])
        assert torch.equal(alone.class_ids, out.class_ids)
        torch.testing.assert_close(alone.probs, out.probs, atol=1e-4, rtol=0)
