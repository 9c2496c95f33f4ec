"""SAM refiner: prompts on hand-made masks, SAM calls against transformers' own processor
path, one image-encoder pass per image, real-configuration checkpoints from a folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g4seg.errors import ModelNotFoundError
from g4seg.types import ClassProbs, Sample
from strategies.refiners import SAMRefiner
from g4seg.models.sam import shared_sam
from strategies.refiners.sam.prompts import components, make_prompt, mask_prompt


def square(mask, top, left, size):
    mask[top : top + size, left : left + size] = True
    return mask


def disc(mask, cx, cy, r):
    import cv2

    canvas = mask.astype(np.uint8)
    cv2.circle(canvas, (cx, cy), r, 1, -1)
    return canvas.astype(bool)


def test_two_components_give_two_boxes_and_points_fall_inside_and_outside():
    mask = disc(disc(np.zeros((60, 80), bool), 12, 12, 7), 57, 42, 8)
    parts, small = components(mask)
    assert len(parts) == 2 and not small.any()
    prompts = sorted((make_prompt(p) for p in parts), key=lambda p: p.box)
    assert [p.box for p in prompts] == [(5, 5, 19, 19), (49, 34, 65, 50)]
    for p, part in zip(prompts, sorted(parts, key=lambda m: np.argwhere(m)[0].tolist())):
        (px, py), (nx, ny) = p.points
        assert p.labels == [1, 0]
        assert part[py, px] and not part[ny, nx]  # positive inside, negative outside (a corner of the box)
        x1, y1, x2, y2 = p.box
        assert x1 <= px <= x2 and y1 <= py <= y2 and x1 <= nx <= x2 and y1 <= ny <= y2
    assert prompts[0].points[0] == (12, 12)  # the most interior pixel: the disc's centre
    # a mask that fills its box leaves no background to put a negative point on: "not a point"
    assert make_prompt(square(np.zeros((20, 20), bool), 5, 5, 8)).labels == [1, -1]


def test_l_shape_negative_point_is_the_background_farthest_from_the_mask_inside_the_box():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:12] = True  # vertical bar
    mask[28:35, 5:35] = True  # horizontal bar: the box's upper right is background
    p = make_prompt(mask)
    nx, ny = p.points[1]
    assert not mask[ny, nx] and nx > 20 and ny < 15


def test_empty_mask_gives_no_prompt_and_leaves_the_class_unchanged():
    assert make_prompt(np.zeros((10, 10), bool)) is None
    h, w = 64, 64
    probs = torch.zeros(3, h, w)
    probs[0] = 0.6
    probs[1] = 0.4  # class 5 never wins: empty mask, no prompt
    probs[2, 20:40, 20:40] = 0.9  # class 7
    sample = Sample("s", torch.zeros(h, w, 3, dtype=torch.uint8), torch.zeros(h, w, dtype=torch.int64),
                    [str(i) for i in range(8)], ClassProbs(torch.tensor([0, 5, 7]), probs))  # fmt: skip
    out = SAMRefiner(iterations=1).refine(sample, sample.coarse, None)
    assert torch.equal(out.probs[1], probs[1])
    assert not torch.equal(out.probs[2], probs[2])  # the class with a mask went through SAM


def test_nothing_to_prompt_and_unrefined_regions_are_said_in_the_notes():
    h, w = 40, 40
    probs = torch.zeros(2, h, w)
    probs[0] = 1.0
    probs[1, 5, 5], probs[0, 5, 5] = 1.0, 0.0  # one pixel of class 3: below min_area, nothing to prompt
    sample = Sample("n", torch.zeros(h, w, 3, dtype=torch.uint8), torch.zeros(h, w, dtype=torch.int64),
                    [str(i) for i in range(4)], ClassProbs(torch.tensor([0, 3]), probs))  # fmt: skip
    out = SAMRefiner(iterations=1).refine(sample, sample.coarse, None)
    assert torch.equal(out.probs, probs)
    assert out.notes == ("no update (no class region of at least 5 px to prompt SAM with)",)
    probs[1, 20:30, 20:30], probs[0, 20:30, 20:30] = 1.0, 0.0  # a refinable square beside the pixel
    out = SAMRefiner(iterations=1).refine(sample, sample.coarse, None)
    assert out.notes == ("class regions under 5 px left unrefined",)
    assert float(out.probs[1, 5, 5]) == 1.0  # the small region keeps its coarse probability


def test_small_components_are_merged_or_left_unrefined():
    mask = square(np.zeros((50, 50), bool), 10, 10, 10)
    mask[40, 40] = True  # 1 pixel: below min_area, left as it is
    parts, small = components(mask)
    assert len(parts) == 1 and small.sum() == 1
    # two halves of one object split by a thin gap: their boxes overlap, the reference merges them
    split = square(square(np.zeros((50, 50), bool), 10, 10, 10), 10, 21, 10)
    assert len(components(split)[0]) == 1


def test_dense_mask_prompt_peaks_inside_and_is_minus_strength_outside():
    mask = square(np.zeros((100, 100), bool), 30, 30, 40)
    p = make_prompt(mask)
    dense = mask_prompt(mask, p.gaussian, (1024, 1024), 1024, strength=30.0)
    assert dense.shape == (1, 256, 256)
    assert float(dense.min()) == -30.0 and 29.0 < float(dense.max()) <= 30.0
    # the 40 x 40 square at 30..69 of 100 covers 76.8..179.2 of 256: positive there, 16 % of the map
    assert bool((dense[0, 79:177, 79:177] > 0).all())
    assert float((dense[0] > 0).float().mean()) == pytest.approx(0.16, abs=0.01)
    peak = np.unravel_index(int(dense[0].argmax()), (256, 256))
    assert all(abs(int(v) - 128) <= 3 for v in peak)  # the Gaussian is centred on the most interior pixel


def test_sam_call_equals_transformers_processor_path(demo_root):
    """Box + points scaled to SAM's input frame by our code equal what SamProcessor makes of
    the same prompts in pixel coordinates; the masks come out of the same model call."""
    from datamodules import VOCFolderDataModule

    dm = VOCFolderDataModule(str(demo_root), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    refiner = SAMRefiner(iterations=1, use_mask=False)
    mask = (sample.coarse.labels() == sample.coarse.foreground()[0][1]).numpy()
    prompt = make_prompt(mask)
    embedding, resized = refiner.shared.embed(sample.id, sample.image.numpy())
    ours = refiner.decode(embedding, [prompt], [mask], resized, sample.size)
    processor, model = refiner.shared.processor, refiner.shared.model
    inputs = processor(images=sample.image.numpy(), input_points=[[prompt.points]], input_labels=[[prompt.labels]],
                       input_boxes=[[list(prompt.box)]], return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"], input_boxes=inputs["input_boxes"], multimask_output=True)  # fmt: skip
    theirs = out.pred_masks[0, 0, out.iou_scores[0, 0].argmax()]
    assert torch.allclose(ours[0], theirs, atol=1e-4)


def test_image_encoder_runs_once_per_image_for_all_classes_iterations_and_strategies(demo_root):
    from datamodules import VOCFolderDataModule

    dm = VOCFolderDataModule(str(demo_root), limit=3)
    dm.setup()
    a, b = SAMRefiner(iterations=3), SAMRefiner(iterations=2, min_area=20)
    assert a.shared is b.shared and a.sam is b.sam  # one model for the checkpoint
    calls = []
    encoder = a.shared.model.get_image_embeddings
    a.shared.model.get_image_embeddings = lambda *x, **k: calls.append(1) or encoder(*x, **k)
    try:
        a.shared._embeddings.clear()
        samples = [dm.dataset[i] for i in range(3)]
        assert sum(len(s.coarse.foreground()) for s in samples) > 3  # several classes per image
        for s in samples:
            a.refine(s, s.coarse, None)
            b.refine(s, s.coarse, None)
    finally:
        del a.shared.model.get_image_embeddings
    assert len(calls) == 3


def test_real_vit_b_configuration_loads_from_a_local_folder(tmp_path):
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    folder = tmp_path / "sam-vit-base"
    torch.manual_seed(0)
    SamModel(SamConfig()).save_pretrained(folder)  # facebook/sam-vit-base's configuration, random weights
    SamProcessor(SamImageProcessor()).save_pretrained(folder)
    refiner = SAMRefiner(model=str(folder), iterations=1)
    assert not refiner.random_weights
    assert sum(p.numel() for p in refiner.sam.parameters()) > 90_000_000
    h, w = 48, 64
    probs = torch.zeros(2, h, w)
    probs[0] = 1.0
    probs[1, 10:30, 20:40], probs[0, 10:30, 20:40] = 1.0, 0.0
    sample = Sample("v", torch.randint(0, 255, (h, w, 3), dtype=torch.uint8), torch.zeros(h, w, dtype=torch.int64),
                    ["background", "x"], ClassProbs(torch.tensor([0, 1]), probs))  # fmt: skip
    out = refiner.refine(sample, sample.coarse, None)
    assert out.probs.shape == probs.shape and torch.allclose(out.probs[0], 1 - out.probs[1])


def test_missing_sam_folder_names_the_download():
    with pytest.raises(ModelNotFoundError, match=r"/nonexistent/sam-vit-huge: the SAM model folder does not exist"):
        shared_sam("/nonexistent/sam-vit-huge")


def test_hq_sam_from_a_folder_and_other_model_types_refused(tmp_path, demo_root):
    from transformers import BertConfig

    from datamodules import VOCFolderDataModule
    from g4seg.errors import ConfigError
    from g4seg.models.tiny import tiny_sam

    tiny_sam("sam_hq").save_pretrained(tmp_path / "hq")
    refiner = SAMRefiner(model=str(tmp_path / "hq"), iterations=1)
    assert type(refiner.sam).__name__ == "SamHQModel" and refiner.shared.hq and not refiner.random_weights
    dm = VOCFolderDataModule(str(demo_root), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    out = refiner.refine(sample, sample.coarse, None)
    assert out.probs.shape == sample.coarse.probs.shape and not torch.equal(out.probs, sample.coarse.probs)
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match="a 'bert' checkpoint; SAMRefiner runs SAM, HQ-SAM and SAM 2"):
        shared_sam(str(tmp_path / "bert"))


def test_sam2_from_a_folder_refines_and_equals_its_processor_path(tmp_path, demo_root):
    """SAM 2 resizes to a square (no padding): our prompt scaling still equals Sam2Processor's."""
    from datamodules import VOCFolderDataModule
    from g4seg.models.tiny import tiny_sam

    tiny_sam("sam2").save_pretrained(tmp_path / "sam2")
    refiner = SAMRefiner(model=str(tmp_path / "sam2"), iterations=2)
    assert type(refiner.sam).__name__ == "Sam2Model" and refiner.shared.kind == "sam2"
    dm = VOCFolderDataModule(str(demo_root), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    out = refiner.refine(sample, sample.coarse, None)
    assert out.probs.shape == sample.coarse.probs.shape and not torch.equal(out.probs, sample.coarse.probs)
    mask = (sample.coarse.labels() == sample.coarse.foreground()[0][1]).numpy()
    prompt = make_prompt(mask)
    embedding, resized = refiner.shared.embed(sample.id, sample.image.numpy())
    no_mask = SAMRefiner(model=str(tmp_path / "sam2"), iterations=1, use_mask=False)
    ours = no_mask.decode(embedding, [prompt], [mask], resized, sample.size)
    processor, model = refiner.shared.processor, refiner.shared.model
    inputs = processor(images=sample.image.numpy(), input_points=[[[list(p) for p in prompt.points]]],
                       input_labels=[[prompt.labels]], input_boxes=[[list(prompt.box)]], return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        theirs = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                       input_labels=inputs["input_labels"], input_boxes=inputs["input_boxes"], multimask_output=True)  # fmt: skip
    best = theirs.pred_masks[0, 0, theirs.iou_scores[0, 0].argmax()]
    assert torch.allclose(ours[0], best, atol=1e-4)
