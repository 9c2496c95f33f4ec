"""Soft class probabilities from a hard label map, keeping every pixel's label.

p_k = sigmoid(d_k / T), d_k the signed distance (pixels, from pixel centres: a boundary
pixel sits at +-0.5) to class k's boundary, positive inside, normalised over classes.
Probability falls off over ~T pixels on each side of a boundary, like a CAM's, and the
argmax is the label map itself, so softening never moves a label or erases a thin object.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .types import ClassProbs


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
