"""PAMR against its equations (Araslanov & Roth 2020; visinf/1-stage-wseg's module) written
out pixel by pixel with explicit loops, and its behaviour on a real image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g4seg.errors import ConfigError
from g4seg.types import ClassProbs, Sample
from strategies.refiners import PAMR
from strategies.refiners.pamr import IMAGENET_MEAN, IMAGENET_STD

RING = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def by_hand(image: np.ndarray, probs: np.ndarray, iterations: int, dilations) -> np.ndarray:
    """image [H, W, 3] uint8, probs [K, H, W]: the paper's update, one pixel at a time."""
    h, w, _ = image.shape
    x = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    at = lambda a, i, j: a[..., min(max(i, 0), h - 1), min(max(j, 0), w - 1)]  # noqa: E731 - replicate border
    xc = x.transpose(2, 0, 1)
    weights = np.zeros((h, w, 8 * len(dilations)))
    for i in range(h):
        for j in range(w):
            logits = []
            ring_and_centre = [[at(xc, i + dy * d, j + dx * d) for (dy, dx) in [(0, 0)] + RING] for d in dilations]
            values = np.array([v for per_d in ring_and_centre for v in per_d])  # [9 D, 3]
            sigma = values.std(axis=0, ddof=1)
            for d in dilations:
                for dy, dx in RING:
                    k = -np.abs(xc[:, i, j] - at(xc, i + dy * d, j + dx * d)) / (1e-8 + 0.1 * sigma)
                    logits.append(k.mean())
            e = np.exp(np.array(logits) - max(logits))
            weights[i, j] = e / e.sum()
    m = probs.astype(np.float64)
    for _ in range(iterations):
        new = np.zeros_like(m)
        for i in range(h):
            for j in range(w):
                p = 0
                for d in dilations:
                    for dy, dx in RING:
                        new[:, i, j] += weights[i, j, p] * at(m, i + dy * d, j + dx * d)
                        p += 1
        m = new
    return m


def sample_of(image: np.ndarray, probs: np.ndarray) -> Sample:
    coarse = ClassProbs(torch.arange(len(probs)), torch.from_numpy(probs).float())
    return Sample("s", torch.from_numpy(image), torch.zeros(image.shape[:2], dtype=torch.int64), ["bg", "a", "b"], coarse)


@pytest.mark.parametrize("dilations,iterations", [((1,), 1), ((1, 2), 3), ((8, 16), 2)])
def test_pamr_equals_its_equations_written_out(dilations, iterations):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)
    image[:4] //= 4  # a dark band: affinities that differ
    probs = rng.random((3, 9, 7))
    probs /= probs.sum(0, keepdims=True)
    out = PAMR(iterations=iterations, dilations=list(dilations)).refine(sample_of(image, probs), sample_of(image, probs).coarse, None)
    expected = by_hand(image, probs, iterations, dilations)
    assert np.allclose(out.probs.numpy(), expected, rtol=1e-4, atol=1e-6), np.abs(out.probs.numpy() - expected).max()
    assert np.allclose(out.probs.sum(0).numpy(), 1.0, atol=1e-5)  # a convex combination keeps the sum


def test_pamr_snaps_a_mask_to_the_image_edge():
    """A square object with a coarse mask 3 px too wide: PAMR pulls the label back to the
    object's edge (its affinities do not cross the colour step)."""
    image = np.full((32, 32, 3), 30, dtype=np.uint8)
    image[8:24, 8:24] = 220
    fg = np.zeros((32, 32))
    fg[5:27, 5:27] = 0.8
    probs = np.stack([1 - fg, fg, np.zeros_like(fg)]).astype(np.float32)
    probs[0] = np.where(fg == 0, 0.9, probs[0])
    probs[1] = np.where(fg == 0, 0.1, probs[1])
    out = PAMR(iterations=10, dilations=[1, 2]).refine(sample_of(image, probs), sample_of(image, probs).coarse, None)
    truth = image[..., 0] > 100
    before = (probs.argmax(0) == 1) == truth
    after = (out.labels().numpy() == 1) == truth
    assert after.mean() > before.mean() and after.mean() > 0.97, (before.mean(), after.mean())


def test_pamr_settings_are_checked_and_recorded():
    assert PAMR(preset="sclip").resolved()["dilations"] == [8, 16]
    assert PAMR().resolved()["dilations"] == [1, 2, 4, 8, 12, 24]
    for bad in ({"iterations": 0}, {"dilations": [0]}, {"preset": "x"}, {"dilations": []}):
        with pytest.raises(ConfigError):
            PAMR(**bad)
    # the image normalisation is torchvision's ImageNet one (as 1-stage-wseg's loader)
    from torchvision.models import ResNet50_Weights

    preset = ResNet50_Weights.IMAGENET1K_V1.transforms()
    assert (tuple(preset.mean), tuple(preset.std)) == (IMAGENET_MEAN, IMAGENET_STD)
