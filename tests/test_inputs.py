"""Bad input gets an error naming the file and the problem; coarse sources behave."""

from __future__ import annotations

import shutil

import numpy as np
import torch
import pytest
from PIL import Image

from datamodules import CoarseFromFiles, DataError, SyntheticDegradation, VOCFolderDataModule, resolve_classes
from datamodules.coarse import fill_ignored
from g4seg.evaluation.counts import pixel_counts
from g4seg.evaluation.metrics import instance_ious

ID = "2007_000645"


@pytest.fixture
def dataset(tmp_path, demo_root):
    root = tmp_path / "voc"
    shutil.copytree(demo_root, root)
    return root


def first_sample(root, **kwargs):
    dm = VOCFolderDataModule(str(root), **kwargs)
    dm.setup()
    return dm.dataset[dm.dataset.ids.index(ID)] if ID in dm.dataset.ids else dm.dataset[0]


def gt_array(root):
    return np.array(Image.open(root / "SegmentationClass" / f"{ID}.png"))


def save_label(path, arr):
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def test_size_mismatch_names_file(dataset):
    gt = gt_array(dataset)
    save_label(dataset / "SegmentationClass" / f"{ID}.png", gt[:-5])
    with pytest.raises(DataError, match=rf"{ID}\.png: ground truth is .* but the image is"):
        first_sample(dataset)


def test_label_outside_classes(dataset):
    gt = gt_array(dataset)
    gt[0, 0] = 42
    save_label(dataset / "SegmentationClass" / f"{ID}.png", gt)
    with pytest.raises(DataError, match=rf"{ID}\.png: ground truth has labels \[42\] outside the 21 classes"):
        first_sample(dataset)


def test_corrupt_and_missing_image(dataset):
    (dataset / "JPEGImages" / f"{ID}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=rf"{ID}\.jpg: cannot read image"):
        first_sample(dataset)
    (dataset / "JPEGImages" / f"{ID}.jpg").unlink()
    with pytest.raises(DataError, match=rf"no image for sample '{ID}'"):
        first_sample(dataset)


def test_empty_dataset_and_unknown_preset(tmp_path):
    (tmp_path / "SegmentationClass").mkdir()
    with pytest.raises(DataError, match="dataset is empty"):
        VOCFolderDataModule(str(tmp_path)).setup()
    with pytest.raises(DataError, match="ground-truth folder is missing"):
        VOCFolderDataModule(str(tmp_path / "nowhere")).setup()
    with pytest.raises(ValueError, match="unknown class preset 'cityscapes'"):
        resolve_classes("cityscapes")


def test_bad_probability_files(dataset, tmp_path):
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    h, w = gt_array(dataset).shape
    np.save(coarse / f"{ID}.npy", np.full((21, h, w), 1.5, np.float32))
    with pytest.raises(DataError, match=rf"{ID}\.npy: probabilities must lie in \[0, 1\]"):
        first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))
    np.save(coarse / f"{ID}.npy", np.full((5, h, w), 0.2, np.float32))
    with pytest.raises(DataError, match=rf"{ID}\.npy: probability array has 5 channels but the dataset has 21"):
        first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))
    np.save(coarse / f"{ID}.npy", np.full((21, h, w + 1), 0.2, np.float32))
    with pytest.raises(DataError, match=rf"{ID}\.npy: probability map is"):
        first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))
    (coarse / f"{ID}.npy").unlink()
    with pytest.raises(DataError, match=rf"no coarse mask for sample '{ID}'"):
        first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))


def test_coarse_from_label_png_and_npz(dataset, tmp_path):
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    gt = gt_array(dataset)
    label = np.where(gt == 255, 0, gt)
    save_label(coarse / f"{ID}.png", label)
    s = first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))
    assert s.coarse.class_ids.tolist() == [0, 3]
    assert np.array_equal(s.coarse.labels().numpy(), label)
    soft = first_sample(dataset, coarse=CoarseFromFiles(str(coarse), soften_sigma=2.0)).coarse
    assert np.allclose(soft.probs.sum(0).numpy(), 1.0, atol=1e-5)
    assert ((soft.probs > 0.05) & (soft.probs < 0.95)).any(), "blurred labels should be soft at boundaries"
    assert (soft.labels().numpy() == label).mean() > 0.99
    probs = np.stack([(label == 0), (label == 3)]).astype(np.float32)
    np.savez(coarse / f"{ID}.npz", probs=probs, class_ids=np.array([0, 3]))
    s = first_sample(dataset, coarse=CoarseFromFiles(str(coarse)))
    assert np.array_equal(s.coarse.labels().numpy(), label)


def test_all_ignore_gt_is_skipped_and_counted(dataset):
    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.refiners import Identity

    gt = gt_array(dataset)
    save_label(dataset / "SegmentationClass" / f"{ID}.png", np.full_like(gt, 255))
    s = first_sample(dataset)
    module = G4SegModule([StrategySpec("id", [Identity()])], class_names=s.class_names)
    [result] = module.predict_step([s])
    assert result.unscored_reason and "all ignore" in result.unscored_reason
    from g4seg.evaluation.summary import summarize

    m = summarize([result], ["id"], s.class_names, [0, 40, 80, 100])
    assert m["num_unscored"] == 1 and m["num_samples"] == 1


def test_synthetic_degradation_is_deterministic_and_in_range(real_voc):
    for low, high in [(0, 40), (40, 80), (80, 100)]:
        dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(low, high)), limit=8)
        dm.setup()
        ious = []
        for i in range(len(dm.dataset)):
            s = dm.dataset[i]
            again = dm.dataset[i]
            assert np.array_equal(s.coarse.probs.numpy(), again.coarse.probs.numpy())
            ious += list(instance_ious(pixel_counts(s.coarse.labels(), s.gt, 21)).values())
        inside = np.mean([(low - 2) <= v <= (high + 2) for v in ious])
        print(f"target {low}-{high}: {inside:.0%} of {len(ious)} instances inside")
        assert inside >= 0.8


def test_degradation_never_erases_a_class_the_ground_truth_has(real_voc):
    """Softening used to blur small objects away (initial IoU 0 although 10-95 was asked)."""
    dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(10, 95), soften_sigma=3.0))
    dm.setup()
    ious = []
    for i in range(len(dm.dataset)):
        s = dm.dataset[i]
        gt_classes = set(np.unique(s.gt.numpy())) - {0, 255}
        assert gt_classes <= set(np.unique(s.coarse.labels().numpy())), s.id
        hard = SyntheticDegradation(iou_range=(10, 95), soften_sigma=0.0).make(s.id, s.image.numpy(), s.gt.numpy(), 21)
        assert torch.equal(hard.labels(), s.coarse.labels()), "softening moves no label"
        ious += list(instance_ious(pixel_counts(s.coarse.labels(), s.gt, 21)).values())
    assert min(ious) >= 8, sorted(ious)[:5]


def test_fill_ignored_takes_nearest_label():
    gt = np.array([[1, 255, 255, 2]])
    assert fill_ignored(gt).tolist() == [[1, 1, 2, 2]]


def test_config_errors_are_clear():
    from g4seg.errors import ConfigError
    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.refiners import Correspondence, Identity

    with pytest.raises(ConfigError, match="names injector 'emi'"):
        G4SegModule([StrategySpec("x", [Identity()], "emi")])
    with pytest.raises(ConfigError, match="needs generated images but no injector"):
        G4SegModule([StrategySpec("x", [Correspondence()])])
    with pytest.raises(ConfigError, match="must be unique and not 'baseline'"):
        G4SegModule([StrategySpec("baseline", [Identity()])])
