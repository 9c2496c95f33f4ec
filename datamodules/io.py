"""Reading images, label maps and probability arrays, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from g4seg.errors import DataError

__all__ = ["DataError", "check_size", "read_image", "read_label_map", "read_probabilities"]


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3]."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def read_label_map(path: Path, num_classes: int, size: tuple[int, int], what: str = "label map") -> np.ndarray:
    """Class-index map from a palette or greyscale PNG; 255 = ignore.

    Palette PNGs are read as indices, never converted to RGB, since the VOC palette colours
    are not the class ids.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"{path}: {what} must be a palette or greyscale PNG of class indices, got mode {im.mode}"
                )
            arr = np.asarray(im, dtype=np.int64).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None
    check_size(path, arr.shape[:2], size, what)
    bad = (arr >= num_classes) & (arr != 255) | (arr < 0)
    if bad.any():
        values = sorted(set(np.unique(arr[bad]).tolist()))[:10]
        raise DataError(
            f"{path}: {what} has labels {values} outside the {num_classes} classes (0..{num_classes - 1}, 255 = ignore)"
        )
    return arr


def read_probabilities(path: Path, num_classes: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(class_ids [K], probs [K, H, W]) from `.npy` ([C, H, W], C = all classes) or `.npz`.

    An `.npz` holds `probs` [K, H, W] and optionally `class_ids` [K] (background first);
    without `class_ids` it must hold all C classes.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                if "probs" not in z:
                    raise DataError(f"{path}: .npz needs an array named 'probs' [K, H, W], has {list(z.keys())}")
                probs = np.asarray(z["probs"], dtype=np.float32)
                class_ids = np.asarray(z["class_ids"], dtype=np.int64) if "class_ids" in z else None
        else:
            probs = np.load(path).astype(np.float32)
            class_ids = None
    except FileNotFoundError:
        raise DataError(f"{path}: probability file is missing") from None
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read probability array ({e})") from None
    if probs.ndim != 3:
        raise DataError(f"{path}: probabilities must be [C, H, W], got shape {probs.shape}")
    check_size(path, probs.shape[1:], size, "probability map")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise DataError(
            f"{path}: probabilities must lie in [0, 1], found range [{np.nanmin(probs):.3g}, {np.nanmax(probs):.3g}]"
        )
    if class_ids is None:
        if probs.shape[0] != num_classes:
            raise DataError(
                f"{path}: probability array has {probs.shape[0]} channels but the dataset has {num_classes} classes "
                "(give all classes, or an .npz with 'class_ids')"
            )
        # Keep background and the classes the segmenter actually predicts somewhere.
        present = np.unique(probs.argmax(0))
        class_ids = np.union1d([0], present).astype(np.int64)
        probs = probs[class_ids]
    else:
        if class_ids.shape != (probs.shape[0],):
            raise DataError(f"{path}: 'class_ids' {class_ids.shape} does not match probs {probs.shape}")
        if class_ids.min() < 0 or class_ids.max() >= num_classes:
            raise DataError(f"{path}: class_ids {class_ids.tolist()} outside 0..{num_classes - 1}")
        if class_ids[0] != 0:
            raise DataError(f"{path}: class_ids must start with background (0), got {class_ids.tolist()}")
    return class_ids, probs


def check_size(path: Path, got: tuple[int, ...], want: tuple[int, int], what: str) -> None:
    if tuple(got) != tuple(want):
        raise DataError(f"{path}: {what} is {got[1]}x{got[0]} (WxH) but the image is {want[1]}x{want[0]}")
