"""Colours and encodings of label maps: the PASCAL VOC colour map, indexed PNGs (the run's
masks), and overlays for the report."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

def voc_palette() -> list[int]:
    """The standard PASCAL VOC bit-interleaved colour map (256 entries)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


PALETTE = voc_palette()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def label_png(labels: np.ndarray) -> bytes:
    """An indexed PNG with the VOC palette: the format of VOC's own label maps."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    return png_bytes(im)
