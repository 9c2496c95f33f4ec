"""`g4seg.refine`: the same strategy objects and code path as `g4seg predict`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import g4seg
from datamodules import VOCFolderDataModule
from g4seg.run.module import G4SegModule, StrategySpec
from strategies.refiners import DenseCRF


@pytest.fixture(scope="module")
def sample(demo_root):
    dm = VOCFolderDataModule(str(demo_root), limit=1)
    dm.setup()
    return dm.dataset[0]


def test_refine_by_name_equals_the_refiner(sample):
    out = g4seg.refine(sample.image.numpy(), sample.coarse.probs.numpy(), "voc", strategy="densecrf",
                       class_ids=sample.coarse.class_ids.tolist())  # fmt: skip
    want = DenseCRF().refine(sample, sample.coarse, None)
    assert torch.equal(out.probs, want.probs) and torch.equal(out.class_ids, want.class_ids)


def test_refine_with_a_config_strategy_equals_predict(sample):
    injector, refiners = g4seg.load_strategy("configs/demo.yaml", "g4seg_emi+crf")
    out = g4seg.refine(sample.image.numpy(), sample.coarse.probs.numpy(), "voc", strategy=refiners,
                       injector=injector, class_ids=sample.coarse.class_ids.tolist())  # fmt: skip
    injector2, refiners2 = g4seg.load_strategy("configs/demo.yaml", "g4seg_emi+crf")
    module = G4SegModule([StrategySpec("s", refiners2, "emi")], {"emi": injector2}, sample.class_names)
    [result] = module.predict_step([sample])
    assert torch.equal(out.labels(), result.labels["s"])


def test_label_map_input_and_bad_input(sample):
    labels = sample.gt.numpy().copy()
    out = g4seg.refine(sample.image.numpy(), labels, "voc", strategy="identity")
    keep = labels != 255
    assert np.array_equal(out.labels().numpy()[keep], labels[keep])
    with pytest.raises(ValueError, match="outside 0..20"):
        g4seg.refine(sample.image.numpy(), np.full(labels.shape, 30), "voc")
    with pytest.raises(ValueError, match="but the image is"):
        g4seg.refine(sample.image.numpy(), labels[:10], "voc")
    with pytest.raises(ValueError, match="by name only"):
        g4seg.refine(sample.image.numpy(), labels, "voc", strategy="g4seg")
