"""Refinement from Python, for people with their own pipeline:

    import g4seg
    out = g4seg.refine(image, coarse_mask, "voc", strategy="densecrf")
    out.labels()            # refined label map [H, W], a torch tensor (.numpy() for an array)
    out.probs, out.class_ids  # torch tensors [K, H, W] and [K]

    injector, refiners = g4seg.load_strategy("configs/demo.yaml", "g4seg_emi")
    out = g4seg.refine(image, coarse_probs, "voc", strategy=refiners, injector=injector, class_ids=[0, 15])

Strategies are the very objects a config builds (an Injector and a chain of Refiners, built
by jsonargparse as `g4seg predict` builds them), run through the module's own `generate`
and `run_strategies`, as in `g4seg predict`, so results match (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .classes import resolve_classes
from .errors import ConfigError, DataError
from .images import read_image
from .interfaces import Injector, Refiner
from .softening import probs_from_labels
from .types import IGNORE_INDEX, ClassProbs, Sample

WEIGHT_FREE = {"identity": "strategies.refiners.Identity", "densecrf": "strategies.refiners.DenseCRF"}


def build(nodes: dict, types: dict) -> dict:
    """Objects from config nodes ({class_path, init_args}), by jsonargparse as LightningCLI
    builds them: the same type checks, defaults and errors as `g4seg predict`."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    for key, kind in types.items():
        parser.add_argument(f"--{key}", type=kind)
    try:
        built = parser.instantiate_classes(parser.parse_object(nodes))
        return {key: built[key] for key in nodes}
    except Exception as e:  # noqa: BLE001 - jsonargparse wraps the constructor's own error
        raise ConfigError(f"cannot build {sorted(nodes)}: {str(e).strip().splitlines()[0]}") from e


def load_strategy(config: str | Path, name: str) -> tuple[Injector | None, list[Refiner]]:
    """The injector (or None) and refiner chain of strategy `name` in a g4seg config file."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text())
    model = cfg.get("model", {})
    specs = {s["name"]: s for s in model.get("strategies", [])}
    if name not in specs:
        raise ConfigError(f"{config}: no strategy {name!r}; it has {sorted(specs)}")
    spec = specs[name]
    nodes, types = {"refiners": spec["refiners"]}, {"refiners": list[Refiner]}
    if spec.get("injector"):
        nodes["injector"], types["injector"] = model.get("injectors", {})[spec["injector"]], Injector
    built = build(nodes, types)
    return built.get("injector"), list(built["refiners"])


def as_probs(coarse, n_classes: int, class_ids: Sequence[int] | None) -> ClassProbs:
    coarse = torch.as_tensor(np.asarray(coarse))
    if coarse.ndim == 2:  # a label map
        labels = coarse.long()
        bad = ((labels < 0) | (labels >= n_classes)) & (labels != IGNORE_INDEX)
        if bool(bad.any()):
            raise DataError(f"coarse label map holds labels outside 0..{n_classes - 1} (255 = ignore)")
        ids = sorted({0, *torch.unique(labels[labels != IGNORE_INDEX]).tolist()})
        return probs_from_labels(labels.numpy(), ids)
    if coarse.ndim != 3:
        raise DataError(f"coarse must be a label map [H, W] or probabilities [K, H, W], got shape {tuple(coarse.shape)}")
    probs = coarse.float()
    if not bool(torch.isfinite(probs).all()) or float(probs.min()) < 0 or float(probs.max()) > 1:
        raise DataError("coarse probabilities must be finite and lie in [0, 1]")
    if class_ids is None:
        if len(probs) != n_classes:
            raise DataError(f"coarse probabilities have {len(probs)} channels for {n_classes} classes; give class_ids")
        class_ids = list(range(n_classes))
    if len(class_ids) != len(probs) or class_ids[0] != 0:
        raise DataError(f"class_ids {list(class_ids)} must match the {len(probs)} channels and start with 0")
    return ClassProbs(torch.as_tensor(list(class_ids), dtype=torch.int64), probs)


def refine(
    image,
    coarse,
    class_names: str | Sequence[str] = "voc",
    strategy: str | Refiner | Sequence[Refiner] = "densecrf",
    injector: Injector | None = None,
    class_ids: Sequence[int] | None = None,
) -> ClassProbs:
    """Refined class probabilities of one image, as torch tensors on the CPU (`ClassProbs`:
    `.labels()` [H, W] int64, `.probs` [K, H, W] float32, `.class_ids` [K]; `.numpy()` on any
    gives an array). Warns (once per call site) when a model of the strategy has random
    weights: its output shows the pipeline running, not the method.

    Args:
        image: RGB uint8 [H, W, 3] (array or tensor) or an image file path.
        coarse: a label map [H, W] (class indices, 255 = unknown) or probabilities [K, H, W].
        class_names: a preset ("voc", "context", "coco_object") or the list, background first.
        strategy: "identity", "densecrf", a Refiner, or a list of Refiners (a chain).
        injector: the Injector for refiners that need generated images (G4Seg's).
        class_ids: dataset ids of the K probability channels (background first) when K is
            not the number of classes.
    """
    from .run.module import G4SegModule, StrategySpec

    names = resolve_classes(class_names if isinstance(class_names, str) else list(class_names))
    if isinstance(image, (str, Path)):
        image = read_image(Path(image))
    image = torch.as_tensor(np.array(image))
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise DataError(f"image must be RGB uint8 [H, W, 3], got {tuple(image.shape)} {image.dtype}")
    probs = as_probs(coarse, len(names), class_ids)
    if probs.size != tuple(image.shape[:2]):
        raise DataError(f"coarse is {probs.size[1]}x{probs.size[0]} (WxH) but the image is {image.shape[1]}x{image.shape[0]}")
    if isinstance(strategy, str):
        if strategy not in WEIGHT_FREE:
            raise ConfigError(f"strategy {strategy!r}: by name only {sorted(WEIGHT_FREE)}; pass Refiner objects "
                              "(or g4seg.load_strategy(config, name)) for the others")  # fmt: skip
        strategy = build({"refiners": [{"class_path": WEIGHT_FREE[strategy]}]}, {"refiners": list[Refiner]})["refiners"]
    refiners = [strategy] if isinstance(strategy, Refiner) else list(strategy)
    injectors = {"injector": injector} if injector is not None else {}
    spec = StrategySpec("refined", refiners, "injector" if injector else None)
    module = G4SegModule([spec], injectors, names)
    if module.uses_random_weights(spec):
        warnings.warn("g4seg.refine: this strategy runs a model with random (untrained) weights; its output shows the "
                      "pipeline running, not the method (load the real weights: docs/strategies.md, Real models)", stacklevel=2)  # fmt: skip
    sample = Sample("image", image, torch.full(image.shape[:2], IGNORE_INDEX, dtype=torch.int64), names, probs)
    generated, _ = module.generate([sample])
    return module.run_strategies(sample, generated)[0]["refined"]
