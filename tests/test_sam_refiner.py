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
    # a mask that fills its box leaves no background: the reference's all-zero map gives its
    # first element, the box's corner, as the negative point (inside the mask)
    full = make_prompt(square(np.zeros((20, 20), bool), 5, 5, 8))
    assert full.labels == [1, 0] and full.points[1] == (5, 5)


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
    for y, x in ((5, 5), (5, 30)):  # two single pixels of class 3: several components, all below min_area
        probs[1, y, x], probs[0, y, x] = 1.0, 0.0
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
    mask[40, 40] = True  # 1 pixel among two components: below min_area, left as it is
    parts, small = components(mask)
    assert len(parts) == 1 and small.sum() == 1
    lone = np.zeros((50, 50), bool)
    lone[40, 40] = True  # a lone component is refined whatever its size, as the reference keeps it
    parts, small = components(lone)
    assert len(parts) == 1 and parts[0].sum() == 1 and not small.any()
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


def reference_merge_regions(cate_mask: np.ndarray) -> list[np.ndarray]:
    """SAMRefiner's `sem2ins_mask.py` (`process` for one class, `merge_regions`,
    `extract_bboxes`), step by step, returning its instance masks."""
    import cv2

    def extract_bboxes(mask):
        y, x = mask.nonzero()
        return [int(x.min()), int(y.min()), int(x.max()), int(y.max())]

    num_labels, labels, stats, _ = cv2.connectedComponentsWithStats(cate_mask.astype(np.uint8), connectivity=8)
    num_labels -= 1
    if num_labels <= 1:
        return [labels == i for i in range(1, num_labels + 1)]
    region_mask, region_mapid = labels.copy(), {}
    for i in range(num_labels):
        if np.sum(region_mask == i + 1) < 5:
            region_mask[region_mask == i + 1] = 0
            region_mapid[i + 1] = 0
        else:
            region_mapid[i + 1] = i + 1
    for i in range(num_labels):
        tidi = region_mapid[i + 1]
        if tidi == 0:
            continue
        xi1, yi1, xi2, yi2 = extract_bboxes((region_mask == tidi).astype(np.uint8))
        box_areai, mask_areai = (xi2 - xi1 + 1) * (yi2 - yi1 + 1), np.sum(region_mask == tidi)
        for j in range(i + 1, num_labels):
            tidj = region_mapid[j + 1]
            if tidj == 0 or tidi == tidj:
                continue
            xj1, yj1, xj2, yj2 = extract_bboxes((region_mask == tidj).astype(np.uint8))
            box_areaj, mask_areaj = (xj2 - xj1 + 1) * (yj2 - yj1 + 1), np.sum(region_mask == tidj)
            area_merge = (max(xi2, xj2) - min(xi1, xj1)) * (max(yi2, yj2) - min(yi1, yj1))
            with np.errstate(divide="ignore"):
                fill = (mask_areai + mask_areaj) / area_merge
            if box_areai + box_areaj > area_merge * 0.5 and fill > min(0.5, min(mask_areai / box_areai, mask_areaj / box_areaj) - 0.1):
                region_mask[region_mask == tidj] = tidi
                xi1, yi1, xi2, yi2 = extract_bboxes((region_mask == tidi).astype(np.uint8))
                box_areai, mask_areai = (xi2 - xi1 + 1) * (yi2 - yi1 + 1), np.sum(region_mask == tidi)
                for kid in region_mapid:
                    if region_mapid[kid] == tidj:
                        region_mapid[kid] = tidi
    return [region_mask == mid for mid in np.unique(region_mask) if mid != 0]


def test_components_equal_samrefiners_merge_regions_on_random_masks():
    import cv2

    rng = np.random.default_rng(0)
    for _ in range(300):
        mask = np.zeros((48, 64), np.uint8)
        for _ in range(int(rng.integers(1, 7))):  # blobs and specks, some touching, some apart
            cv2.ellipse(mask, (int(rng.integers(0, 64)), int(rng.integers(0, 48))),
                        (int(rng.integers(0, 9)), int(rng.integers(0, 9))), float(rng.integers(0, 180)), 0, 360, 1, -1)  # fmt: skip
        ours, small = components(mask.astype(bool))
        want = reference_merge_regions(mask)
        assert len(ours) == len(want) and all(np.array_equal(a, b) for a, b in zip(ours, want))
        kept = np.logical_or.reduce(want) if want else np.zeros(mask.shape, bool)
        assert np.array_equal(small, mask.astype(bool) & ~kept)  # what the reference drops, we leave unrefined


def test_fastgeodis_distance_is_the_reference_transform_and_close_to_the_exact_one():
    FastGeodis = pytest.importorskip("FastGeodis", reason="pip install --no-build-isolation FastGeodis")
    from strategies.refiners.sam.prompts import distance_inside

    mask = disc(square(np.zeros((60, 80), bool), 10, 10, 25), 55, 35, 15)
    direct = FastGeodis.generalised_geodesic2d(torch.zeros(1, 1, 60, 80), torch.from_numpy(mask[None, None].astype(np.float32)),
                                               1e10, 0.0, 2)[0, 0].numpy()  # fmt: skip
    ours = distance_inside(mask, "fastgeodis")
    assert np.array_equal(ours, (direct * mask).astype(np.float32))
    exact = distance_inside(mask, "exact")
    assert np.abs(ours - exact).max() < 1.5 and (ours[~mask] == 0).all()
