"""Class probabilities from hard label maps, keeping every pixel's label.

`probs_from_labels`: one-hot maps, optionally Gaussian-blurred (synthetic coarse masks,
label PNGs given a soft edge). `soften`: a signed-distance sigmoid:

p_k = sigmoid(d_k / T), d_k the signed distance (pixels, from pixel centres: a boundary
pixel sits at +-0.5) to class k's boundary, positive inside, normalised over classes.
Probability falls off over ~T pixels on each side of a boundary, like a CAM's, and the
argmax is the label map itself, so softening never moves a label or erases a thin object.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from scipy import ndimage

from .types import IGNORE_INDEX, ClassProbs


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (pixels) from each pixel centre to the mask boundary, positive inside."""
    if mask.all() or not mask.any():
        return np.full(mask.shape, 1e6 if mask.all() else -1e6, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def soft_probs(labels: np.ndarray, class_ids, temperature: float) -> np.ndarray:
    """[K, H, W] float32 probabilities of the classes `class_ids` from a label map."""
    d = np.stack([signed_distance(labels == int(c)) for c in class_ids]) / temperature
    p = 1.0 / (1.0 + np.exp(-np.clip(d, -60, 60)))
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def soften(probs: ClassProbs, temperature: float) -> ClassProbs:
    """The same classes, softened from the current label map; argmax unchanged."""
    labels = probs.labels().numpy()
    return probs.with_probs(torch.from_numpy(soft_probs(labels, probs.class_ids.tolist(), temperature)))


def probs_from_labels(
    labels: np.ndarray, class_ids: Sequence[int], soften_sigma: float = 0.0, confidence: float = 1.0
) -> ClassProbs:
    """Per-class probabilities from a hard label map.

    `soften_sigma` > 0 blurs the one-hot maps (Gaussian, pixels) into soft boundaries like a
    CAM's, then keeps every pixel's label the most probable one (the labelled class is
    raised just above the pixel's largest other value where the blur had overtaken it), so
    small or thin objects are never blurred away and the coarse mask's IoU is the one asked
    for. `confidence` < 1 mixes in a uniform floor so that a CRF's unaries are not
    infinitely sure. Label 255 (unknown) becomes uniform.
    """
    ids = np.asarray(class_ids, dtype=np.int64)
    hard = labels[None] == ids[:, None, None]
    probs = hard.astype(np.float32)
    if soften_sigma > 0:
        probs = np.stack([cv2.GaussianBlur(ch, (0, 0), soften_sigma) for ch in probs])
        probs /= np.clip(probs.sum(0, keepdims=True), 1e-6, None)
        top = probs.max(0, keepdims=True)
        probs = np.where(hard & (probs < top), top + 1e-3, probs)
        probs /= probs.sum(0, keepdims=True)
    probs[:, labels == IGNORE_INDEX] = 1.0 / len(ids)
    if confidence < 1.0:
        probs = confidence * probs + (1.0 - confidence) / len(ids)
    return ClassProbs(torch.from_numpy(ids), torch.from_numpy(np.clip(probs, 0.0, 1.0).astype(np.float32)))
