"""When G4Seg's refiner gets input it could not act on, and what it does then.

G4Seg's confidence filter changes only pixels whose probability lies in [0.2, 0.6]. The
paper refines CAMs and CLIP-segmenter scores, which are soft. A label PNG gives 0/1
probabilities: the filter then selects nothing, and no blend with beta >= 0.5 can flip a
label, so the refiner would be a silent no-op. Such input is softened with
`g4seg.softening.soften` (signed-distance sigmoid; labels unchanged), which gives the
filter a band of about 1.8 T pixels around each boundary to work in.
"""

from __future__ import annotations

from g4seg.softening import signed_distance, soften
from g4seg.types import ClassProbs

SOFTEN_MODES = ("auto", "always", "never")

__all__ = ["SOFTEN_MODES", "is_hard", "signed_distance", "soften", "why_inert"]


def is_hard(p) -> bool:
    """Only 0 and 1 (a label map given as probabilities); an array or a tensor."""
    return bool(((p == 0) | (p == 1)).all())


def why_inert(probs: ClassProbs, low: float, high: float) -> str | None:
    """Why SCA + CF could change no label of this input, or None when it can.

    0/1 probabilities cannot flip a label under a blend with beta >= 0.5 even without the
    filter; and no filter window can select what lies outside it.
    """
    fg = [k for k, _ in probs.foreground()]
    if not fg:
        return None
    p = probs.probs[fg]
    if is_hard(p):
        return "hard 0/1 probabilities"
    if not bool(((p >= low) & (p <= high)).any()):
        return f"no foreground probability in [{low:g}, {high:g}]"
    return None
