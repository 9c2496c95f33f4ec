"""DenseCRF on real images, its CLIP-ES preset against CLIP-ES's published post-processor
(pydensecrf called directly, as its `eval_cam_with_crf.py` does), and hard input."""

from __future__ import annotations

import cv2
import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.utils as utils
import pytest
import torch

from datamodules import SyntheticDegradation, VOCFolderDataModule
from g4seg.evaluation.summary import summarize
from g4seg.run.module import G4SegModule, StrategySpec
from g4seg.types import ClassProbs, Sample
from strategies.refiners import DenseCRF, Identity


def test_densecrf_raises_miou_on_boundary_degraded_real_masks(real_voc):
    coarse = SyntheticDegradation(iou_range=(50, 90), ops=["boundary"], soften_sigma=3.0)
    dm = VOCFolderDataModule(str(real_voc), coarse=coarse)
    dm.setup()
    module = G4SegModule(
        [StrategySpec("identity", [Identity()]), StrategySpec("crf", [DenseCRF()])], class_names=dm.class_names
    )
    results = [r for i in range(len(dm.dataset)) for r in module.predict_step([dm.dataset[i]])]
    m = summarize(results, ["identity", "crf"], dm.class_names, module.strata_edges)["strategies"]
    gain = m["crf"]["gain"]
    print(f"DenseCRF on {len(dm.dataset)} real images: {m['crf']['miou_baseline']:.2f} -> "
          f"{m['crf']['miou_refined']:.2f} mIoU (gain {gain:+.2f})")
    assert m["identity"]["gain"] == 0
    assert gain > 0.5


def test_densecrf_keeps_shapes_and_distribution():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.dirichlet([1, 1, 1], (20, 30)).transpose(2, 0, 1).astype(np.float32))
    probs = ClassProbs(torch.tensor([0, 4, 7]), p)
    image = torch.from_numpy(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    sample = Sample("x", image, torch.zeros(20, 30, dtype=torch.long), ["c"] * 21, probs)
    out = DenseCRF(iterations=3).refine(sample, probs, None)
    assert out.probs.shape == p.shape and out.class_ids.tolist() == [0, 4, 7]
    assert torch.allclose(out.probs.sum(0), torch.ones(20, 30), atol=1e-4)


def clip_es_reference(image_path, cams: np.ndarray) -> np.ndarray:
    """CLIP-ES `eval_cam_with_crf.py`, `process` and `DenseCRF.__call__`, step by step."""
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR).astype(np.float32)
    image -= (104.008, 116.669, 122.675)
    image = image.transpose(2, 0, 1)
    bg_score = np.power(1 - np.max(cams, axis=0, keepdims=True), 1)
    prob = np.concatenate((bg_score, cams), axis=0)
    with np.errstate(invalid="ignore"):
        image = image.astype(np.uint8).transpose(1, 2, 0)
    c, h, w = prob.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(prob)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(image), compat=4)
    return np.array(d.inference(10)).reshape((c, h, w))


def test_clip_es_preset_is_clip_es_post_processor_bit_for_bit(real_voc):
    dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(30, 90), soften_sigma=6.0), limit=6)
    dm.setup()
    crf = DenseCRF(preset="clip_es")
    assert crf.resolved()["bilateral_sxy"] == 67.0 and crf.resolved()["gaussian_sxy"] == 1.0
    changed = 0
    for i in range(len(dm.dataset)):
        s = dm.dataset[i]
        cams = s.coarse.probs[1:].numpy().astype(np.float32)  # a CAM per foreground class, in [0, 1]
        probs = ClassProbs(s.coarse.class_ids, torch.from_numpy(np.concatenate([1 - cams.max(0, keepdims=True), cams])))
        want = clip_es_reference(s.files["image"], cams)
        got = crf.refine(s, probs, None).probs.numpy()
        assert np.array_equal(got, want.astype(np.float32)), s.id
        changed += int((got.argmax(0) != probs.probs.numpy().argmax(0)).sum())
    assert changed > 1000  # the comparison is of a CRF that acts


def test_hard_label_input_gets_a_unary_from_labels_and_changes_labels(real_voc):
    dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(50, 80), soften_sigma=0.0), limit=3)
    dm.setup()
    crf = DenseCRF()
    changed = 0
    for i in range(3):
        s = dm.dataset[i]
        assert bool(((s.coarse.probs == 0) | (s.coarse.probs == 1)).all())
        out = crf.refine(s, s.coarse, None)
        assert out.notes == ("input hard: unary from labels, gt_prob 0.7",)
        # pydensecrf called directly, as its README does for label maps
        k, h, w = s.coarse.probs.shape
        d = dcrf.DenseCRF2D(w, h, k)
        d.setUnaryEnergy(utils.unary_from_labels(s.coarse.probs.numpy().argmax(0), k, gt_prob=0.7, zero_unsure=False))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=50, srgb=13, rgbim=np.ascontiguousarray(s.image.numpy()), compat=10)
        assert np.array_equal(out.probs.numpy(), np.array(d.inference(10), dtype=np.float32).reshape(k, h, w))
        changed += int((out.labels() != s.coarse.labels()).sum())
    assert changed > 1000
    with pytest.raises(ValueError, match="preset must be one of"):
        DenseCRF(preset="crf-rnn")
