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
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # DenseCRF has no weights: no random-weights warning
        out = g4seg.refine(sample.image.numpy(), sample.coarse.probs.numpy(), "voc", strategy="densecrf",
                           class_ids=sample.coarse.class_ids.tolist())  # fmt: skip
    want = DenseCRF().refine(sample, sample.coarse, None)
    assert torch.equal(out.probs, want.probs) and torch.equal(out.class_ids, want.class_ids)


def test_refine_with_a_config_strategy_equals_predict(sample):
    injector, refiners = g4seg.load_strategy("configs/demo.yaml", "g4seg_emi+crf")
    with pytest.warns(UserWarning, match="random \\(untrained\\) weights"):  # the demo's tiny models
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


def test_api_densecrf_acts_on_a_label_map_and_says_how(real_voc):
    """A label map through g4seg.refine gets the same hard-input rule as `g4seg predict`."""
    import numpy as np
    from PIL import Image

    import g4seg

    gt_path = sorted((real_voc / "SegmentationClass").glob("*.png"))[0]
    labels = np.asarray(Image.open(gt_path)).astype(np.int64)
    labels[labels == 255] = 0
    coarse = np.roll(labels, 6, axis=1)  # a shifted mask: boundaries off the image edges
    image = real_voc / "JPEGImages" / f"{gt_path.stem}.jpg"
    out = g4seg.refine(str(image), coarse, "voc", strategy="densecrf")
    assert out.notes == ("input hard: unary from labels, gt_prob 0.7",)
    assert int((out.labels().numpy() != coarse).sum()) > 500
    same = g4seg.refine(str(image), np.zeros_like(coarse), "voc", strategy="densecrf")  # background only
    assert "changed no label" in same.notes
