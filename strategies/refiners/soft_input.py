"""Soft class probabilities from hard ones, for refiners that act only on uncertain pixels.

G4Seg's confidence filter changes only pixels whose probability lies in [0.2, 0.6]. The
paper refines CAMs and CLIP-segmenter scores, which are soft. A label PNG gives 0/1
probabilities: the filter then selects nothing and the refiner would be a silent no-op.

The softening is a sigmoid of the signed distance to each class's boundary,
p_k = sigmoid(d_k / T), d_k > 0 inside class k, measured from pixel centres (a boundary
pixel sits at +-0.5), then normalised over classes. It keeps every pixel's argmax (the
label map does not change), makes probability fall off over ~T pixels on each side of a
boundary like a CAM's, and gives the filter a band of about 1.8 T pixels around each
boundary to work in.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from g4seg.types import ClassProbs

SOFTEN_MODES = ("auto", "always", "never")


def why_inert(probs: ClassProbs, low: float, high: float) -> str | None:
    """Why SCA + CF could change no label of this input, or None when it can.

    0/1 probabilities cannot flip a label under a blend with beta >= 0.5 even without the
    filter; and no filter window can select what lies outside it.
    """
    fg = [k for k, _ in probs.foreground()]
    if not fg:
        return None
    p = probs.probs[fg]
    if bool(((p == 0) | (p == 1)).all()):
        return "hard 0/1 probabilities"
    if not bool(((p >= low) & (p <= high)).any()):
        return f"no foreground probability in [{low:g}, {high:g}]"
    return None


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (pixels) from each pixel centre to the mask boundary, positive inside."""
    if mask.all() or not mask.any():
        return np.full(mask.shape, 1e6 if mask.all() else -1e6, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def soften(probs: ClassProbs, temperature: float) -> ClassProbs:
    """Signed-distance sigmoid of the current label map; argmax unchanged."""
    labels = probs.labels().numpy()
    d = np.stack([signed_distance(labels == int(c)) for c in probs.class_ids])
    p = torch.sigmoid(torch.from_numpy(d) / temperature)
    return probs.with_probs(p / p.sum(0, keepdim=True))
