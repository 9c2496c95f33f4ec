"""Any transformers semantic-segmentation model as the coarse source: its per-class scores
agree with transformers' own post-processing (the argmax is its label map), models saved
with save_pretrained load through the real path with their labels mapped to the dataset's,
and a run with it works end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import finished_run, read_metrics
from datamodules import HFSegmenter, VOCFolderDataModule
from datamodules.hf_segmenter import TINY_LABELS
from g4seg.models.hf_segmentation import semantic_probs
from g4seg.models.tiny import tiny_segmenter


@pytest.fixture(scope="module")
def images(real_voc):
    dm = VOCFolderDataModule(str(real_voc), limit=3)
    dm.setup()
    return [dm.dataset[i].image.numpy() for i in range(3)]


@pytest.mark.parametrize("kind", ["tiny-segformer", "tiny-mask2former"])
def test_scores_argmax_is_transformers_own_label_map(kind, images):
    net, processor = tiny_segmenter(kind, TINY_LABELS, seed=3)
    for image in images:
        probs = semantic_probs(net, processor, image)
        assert probs.shape == (21, *image.shape[:2]) and torch.allclose(probs.sum(0), torch.ones(image.shape[:2]), atol=1e-4)
        with torch.no_grad():
            out = net(**processor(images=[image], return_tensors="pt"))
        want = processor.post_process_semantic_segmentation(out, target_sizes=[image.shape[:2]])[0]
        agree = float((probs.argmax(0) == want).float().mean())
        assert agree > 0.999, agree  # ties and float order aside, the same label map


@pytest.mark.parametrize("kind", ["tiny-segformer", "tiny-mask2former"])
def test_a_saved_model_loads_and_its_labels_map_to_the_dataset(kind, tmp_path, images):
    ade_like = ["wall", "person;individual;someone", "airplane;aeroplane;plane", "car;auto", "sky"]
    net, processor = tiny_segmenter(kind, ade_like)
    net.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    seg = HFSegmenter(model=str(tmp_path / "model"), mapping={"sky": "background"})
    assert seg.random_weights is False and seg.model_labels == ade_like
    voc = TINY_LABELS
    target, mapped = seg.targets(voc)
    assert target.tolist() == [0, voc.index("person"), voc.index("aeroplane"), voc.index("car"), 0] and mapped == 3
    out = seg.make("x", images[0], np.zeros(images[0].shape[:2], np.int64), 21, voc)
    assert out.class_ids[0] == 0 and set(out.class_ids.tolist()) <= {0, 1, 7, 15}
    assert out.notes[0] == f"2 of 5 classes of {tmp_path / 'model'} map to no dataset class and count as background"
    with pytest.raises(Exception, match="not labels of"):
        HFSegmenter(model=str(tmp_path / "model"), mapping={"tree": "pottedplant"})


def test_a_run_with_a_segformer_coarse_source(tmp_path):
    coarse = json.dumps({"class_path": "datamodules.HFSegmenter", "init_args": {"model": "tiny-segformer"}})
    out = finished_run(tmp_path / "run", "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2",
                       "--data.init_args.coarse", coarse, "--scoring.bootstrap", "0")  # fmt: skip
    metrics = read_metrics(out)
    assert metrics["num_samples"] == 2 and set(metrics["strategies"]) == {"identity", "densecrf"}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config"]["data"]["init_args"]["coarse"]["class_path"] == "datamodules.HFSegmenter"


def test_ade20k_preset_takes_an_ade_checkpoints_labels_and_ignore_zero_drops_other(tmp_path, real_voc):
    """Table V's setting: an ADE20K checkpoint's 150 labels (its id2label, "bed " with the
    trailing space of the released label file) land on the preset's ids 1..150 in order, and
    with ignore_zero the ground truth's 0 ("other") is ignored like 255."""
    import shutil

    from g4seg.classes import ADE20K
    from g4seg.types import IGNORE_INDEX

    labels = [("bed " if n == "bed" else n) for n in ADE20K[1:]]
    net, processor = tiny_segmenter("tiny-segformer", labels)
    net.save_pretrained(tmp_path / "ade")
    processor.save_pretrained(tmp_path / "ade")
    seg = HFSegmenter(model=str(tmp_path / "ade"))
    target, mapped = seg.targets(ADE20K)
    assert target.tolist() == list(range(1, 151)) and mapped == 150
    root = tmp_path / "data"
    for sub in ("JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    image = sorted((real_voc / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(image, root / "JPEGImages" / image.name)
    from PIL import Image

    h, w = np.asarray(Image.open(image)).shape[:2]
    gt = np.zeros((h, w), np.uint8)
    gt[: h // 2] = 3  # sky
    Image.fromarray(gt).save(root / "SegmentationClass" / f"{image.stem}.png")
    for ignore_zero, zero in ((False, 0), (True, IGNORE_INDEX)):
        dm = VOCFolderDataModule(str(root), classes="ade20k", ignore_zero=ignore_zero)
        dm.setup()
        got = dm.dataset[0].gt.numpy()
        assert (got[: h // 2] == 3).all() and (got[h // 2 :] == zero).all()
