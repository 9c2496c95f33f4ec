"""SCA + CF: the correspondence, the update formula and confidence filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g4seg.models.clip import DenseCLIP
from g4seg.types import ClassProbs, Generated, Sample
from strategies.refiners import Correspondence
from strategies.refiners.correspondence import match_cells

G, CELL, D = 8, 5, 16  # 8x8 feature grid, 5 px cells: a 40x40 image
H = W = G * CELL


def make_sample(rng, n_classes=2):
    image = torch.from_numpy(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    fg = rng.uniform(0, 1, (n_classes, H, W)).astype(np.float32)
    bg = np.clip(1 - fg.max(0, keepdims=True), 0, 1)
    probs = ClassProbs(torch.arange(n_classes + 1), torch.from_numpy(np.concatenate([bg, fg])))
    sample = Sample("s", image, torch.zeros(H, W, dtype=torch.long), ["bg", "a", "b"][: n_classes + 1], probs)
    generated = Generated("s", list(range(1, n_classes + 1)), image[None].repeat(n_classes, 1, 1, 1))
    return sample, probs, generated


def shifted_features(rng, shifts):
    """Original features and, per class, the original rolled right by k cells."""
    orig = rng.standard_normal((G, G, D)).astype(np.float32)
    orig /= np.linalg.norm(orig, axis=-1, keepdims=True)
    gens = [np.roll(orig, k, axis=1) for k in shifts]
    return torch.from_numpy(np.stack([orig, *gens]))


def numpy_reference(s, k, beta, low, high):
    """Pixel (y, x) sits in cell (y//5, x//5); generated cell (cy, cx) matches original
    (cy, (cx - k) mod G), so the pixel reads S at x + ((cx - k) mod G - cx) * 5."""
    out = s.copy()
    for y in range(H):
        for x in range(W):
            cx = x // CELL
            src = min(max(x + (((cx - k) % G) - cx) * CELL, 0), W - 1)
            if low <= s[y, x] <= high:
                out[y, x] = beta * s[y, x] + (1 - beta) * s[y, src]
    return out


@pytest.fixture
def refiner(monkeypatch):
    ref = Correspondence(beta=0.8, conf_range=(0.2, 0.6))
    monkeypatch.setattr(ref.encoder, "image_size", G * ref.encoder.patch)  # grid G
    return ref


def test_shift_is_recovered_and_update_matches_numpy(refiner, monkeypatch):
    rng = np.random.default_rng(0)
    sample, probs, generated = make_sample(rng)
    feats = shifted_features(rng, shifts=[2, 3])
    calls = []
    monkeypatch.setattr(refiner.encoder, "features", lambda images: calls.append(len(images)) or feats)

    expected_match = torch.tensor([[cy * G + (cx - 2) % G for cx in range(G)] for cy in range(G)]).flatten()
    assert torch.equal(match_cells(feats[1], feats[0]), expected_match)

    out = refiner.refine(sample, probs, generated)
    assert calls == [3], "original + both classes' images in one forward"
    for k, shift in ((1, 2), (2, 3)):
        ref = numpy_reference(probs.probs[k].numpy(), shift, 0.8, 0.2, 0.6)
        np.testing.assert_allclose(out.probs[k].numpy(), ref, rtol=0, atol=1e-6)
    # each class against "everything else": the mass a class gains comes out of background
    gained = (out.probs[1:] - probs.probs[1:]).sum(0)
    np.testing.assert_allclose(out.probs[0].numpy(), (probs.probs[0] - gained).clamp(0, 1).numpy(), atol=1e-6)
    assert torch.equal(out.probs[0][gained == 0], probs.probs[0][gained == 0])
    assert out.notes == (), "soft input is not softened"


def test_out_of_range_pixels_are_bit_identical(refiner, monkeypatch):
    rng = np.random.default_rng(1)
    sample, probs, generated = make_sample(rng)
    monkeypatch.setattr(refiner.encoder, "features", lambda images: shifted_features(rng, [1, 4]))
    out = refiner.refine(sample, probs, generated)
    s, r = probs.probs[1:], out.probs[1:]
    outside = (s < 0.2) | (s > 0.6)
    assert outside.any() and (~outside).any()
    assert torch.equal(r[outside], s[outside])
    assert (r[~outside] != s[~outside]).any(), "in-range pixels with a different source must move"


def test_beta_one_or_empty_range_returns_input(monkeypatch):
    rng = np.random.default_rng(2)
    sample, probs, generated = make_sample(rng)
    for ref, why in ((Correspondence(beta=1.0), "beta = 1"), (Correspondence(conf_range=(0.7, 0.3)), "empty conf_range")):
        out = ref.refine(sample, probs, generated)
        assert torch.equal(out.probs, probs.probs)
        assert out.notes and out.notes[0].startswith(f"no update ({why}"), "an inert configuration says so"


def test_presets_and_errors():
    assert Correspondence(preset="wsss").beta == 0.9
    assert Correspondence(preset="open_vocabulary").beta == 0.8
    with pytest.raises(ValueError, match="unknown preset"):
        Correspondence(preset="fast")
    rng = np.random.default_rng(3)
    sample, probs, _ = make_sample(rng)
    with pytest.raises(ValueError, match="needs generated images"):
        Correspondence().refine(sample, probs, None)


def test_original_features_once_per_image_on_real_pipeline(demo_root):
    from datamodules import VOCFolderDataModule
    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.injectors import AttentionInjection

    dm = VOCFolderDataModule(str(demo_root), limit=2)
    dm.setup()
    ref = Correspondence()
    calls = []
    real = ref.encoder.features
    ref.encoder.features = lambda images: calls.append(len(images)) or real(images)
    module = G4SegModule([StrategySpec("g4seg", [ref], "emi")], {"emi": AttentionInjection()}, dm.class_names)
    results = module.predict_step([dm.dataset[0], dm.dataset[1]])
    n_classes = [len(s.coarse.foreground()) for s in (dm.dataset[0], dm.dataset[1])]
    assert calls == [1 + n for n in n_classes]  # one forward per image: its original + every class

    assert results[0].random_weights == ["g4seg"]


def test_dense_clip_grid_and_maskclip():
    enc = DenseCLIP(image_size=96)
    img = torch.randint(0, 255, (50, 70, 3), dtype=torch.uint8)
    f = enc.features([img, img])
    assert f.shape == (2, 12, 12, 16)
    assert torch.allclose(f.norm(dim=-1), torch.ones(2, 12, 12), atol=1e-5)
    g = DenseCLIP(image_size=96, maskclip=True).features([img])
    assert g.shape == (1, 12, 12, 16) and not torch.allclose(g[0], f[0])


def one_class_sample(fg: np.ndarray):
    """A sample whose class-1 probability is `fg` and background 1 - fg."""
    image = torch.zeros(H, W, 3, dtype=torch.uint8)
    probs = ClassProbs(torch.tensor([0, 1]), torch.from_numpy(np.stack([1 - fg, fg]).astype(np.float32)))
    sample = Sample("s", image, torch.zeros(H, W, dtype=torch.long), ["bg", "a"], probs)
    return sample, probs, Generated("s", [1], image[None])


def test_labels_flip_toward_and_away_from_background(refiner, monkeypatch):
    """Column block 0 (x < 5) holds 0.55 (class), block 1 holds 0.45 (background); the
    generated image matches block 0 to block 7 (prob 0.0) and block 1 to block 2 (1.0)."""
    fg = np.zeros((H, W), np.float32)
    fg[:, 0:5], fg[:, 5:10], fg[:, 10:15] = 0.55, 0.45, 1.0
    sample, probs, generated = one_class_sample(fg)
    rng = np.random.default_rng(4)
    orig = shifted_features(rng, [])[0]
    gen = orig.clone()
    gen[:, 0], gen[:, 1] = orig[:, 7], orig[:, 2]
    monkeypatch.setattr(refiner.encoder, "features", lambda images: torch.stack([orig, gen]))
    before, after = probs.labels(), refiner.refine(sample, probs, generated).labels()
    assert (before[:, 0:5] == 1).all() and (after[:, 0:5] == 0).all(), "0.8*0.55 + 0.2*0 = 0.44 < bg 0.56"
    assert (before[:, 5:10] == 0).all() and (after[:, 5:10] == 1).all(), "0.8*0.45 + 0.2*1 = 0.56 > bg 0.44"
    assert torch.equal(after[:, 10:], before[:, 10:])


def test_hard_input_is_softened_and_says_so(refiner, monkeypatch):
    fg = np.zeros((H, W), np.float32)
    fg[8:32, 8:24] = 1.0  # a hard label-PNG mask
    sample, probs, generated = one_class_sample(fg)
    rng = np.random.default_rng(5)
    monkeypatch.setattr(refiner.encoder, "features", lambda images: shifted_features(rng, [2]))
    out = refiner.refine(sample, probs, generated)
    assert out.notes and out.notes[0].startswith("input softened (signed-distance sigmoid")
    changed = int((out.labels() != probs.labels()).sum())
    assert changed > 0, "hard input must not be a silent no-op"
    # the softened input alone keeps every label
    from strategies.refiners.soft_input import soften

    assert torch.equal(soften(probs, 8.0).labels(), probs.labels())
    never = Correspondence(soften="never")
    with pytest.raises(ValueError, match="set soften: auto"):
        never.refine(sample, probs, generated)


def test_softening_keeps_every_label_of_real_multiclass_masks(demo_root):
    from datamodules import VOCFolderDataModule
    from strategies.refiners.soft_input import soften, why_inert

    dm = VOCFolderDataModule(str(demo_root), limit=4)
    dm.setup()
    for i in range(4):
        coarse = dm.dataset[i].coarse
        hard = ClassProbs(coarse.class_ids, (coarse.labels()[None] == coarse.class_ids[:, None, None]).float())
        assert why_inert(hard, 0.2, 0.6) == why_inert(hard, 0.0, 1.0) == "hard 0/1 probabilities"
        for t in (1.0, 8.0, 32.0):
            soft = soften(hard, t)
            assert torch.equal(soft.labels(), hard.labels())
            assert torch.allclose(soft.probs.sum(0), torch.ones(soft.size))
            assert why_inert(soft, 0.2, 0.6) is None
