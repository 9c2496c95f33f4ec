"""Reading images, label maps and probability arrays, with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError  # noqa: F401

from g4seg.errors import DataError
from g4seg.files import read_hashed
from g4seg.images import read_image, why_unreadable

__all__ = ["DataError", "check_size", "read_image", "read_label_map", "read_probabilities"]


def read_label_map(path: Path, num_classes: int, size: tuple[int, int], what: str = "label map",
                   digests: dict[str, str] | None = None) -> np.ndarray:  # fmt: skip
    """Class-index map from a palette or greyscale PNG; 255 = ignore.

    Palette PNGs are read as indices, never converted to RGB, since the VOC palette colours
    are not the class ids.
    """
    try:
        with Image.open(io.BytesIO(read_hashed(path, digests))) as im:
            im.load()
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"{path}: {what} must be a palette or greyscale PNG of class indices, got mode {im.mode}"
                )
            arr = np.asarray(im, dtype=np.int64).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read {what} ({why_unreadable(path, e)})") from None
    check_size(path, arr.shape[:2], size, what)
    bad = (arr >= num_classes) & (arr != 255) | (arr < 0)
    if bad.any():
        values = sorted(set(np.unique(arr[bad]).tolist()))[:10]
        raise DataError(
            f"{path}: {what} has labels {values} outside the {num_classes} classes (0..{num_classes - 1}, 255 = ignore)"
        )
    return arr


def read_probabilities(path: Path, num_classes: int, size: tuple[int, int],
                       digests: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(class_ids [K], probs [K, H, W]) from `.npy` ([C, H, W], C = all classes) or `.npz`.

    An `.npz` holds `probs` [K, H, W] and optionally `class_ids` [K] (background first);
    without `class_ids` it must hold all C classes.
    """
    try:
        data = io.BytesIO(read_hashed(path, digests))
        if path.suffix == ".npz":
            with np.load(data, allow_pickle=False) as z:
                if "probs" not in z:
                    raise DataError(f"{path}: .npz needs an array named 'probs' [K, H, W], has {list(z.keys())}")
                probs = np.asarray(z["probs"], dtype=np.float32)
                class_ids = integer_ids(path, z["class_ids"]) if "class_ids" in z else None
        else:
            probs = np.load(data, allow_pickle=False).astype(np.float32)
            class_ids = None
    except FileNotFoundError:
        raise DataError(f"{path}: probability file is missing") from None
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read probability array ({e})") from None
    if probs.ndim != 3:
        raise DataError(f"{path}: probabilities must be [C, H, W], got shape {probs.shape}")
    if probs.shape[0] > probs.shape[2] and probs.shape[2] <= num_classes and tuple(probs.shape[:2]) == tuple(size):
        raise DataError(
            f"{path}: probabilities look stored as [H, W, C] {probs.shape}; save them as [C, H, W] "
            "(numpy: probs.transpose(2, 0, 1))"
        )
    check_size(path, probs.shape[1:], size, "probability map")
    finite = np.isfinite(probs)
    if not finite.all():
        kinds = sorted({"NaN" if np.isnan(v) else "inf" for v in probs[~finite][:1000]})
        raise DataError(f"{path}: probabilities hold {' and '.join(kinds)} at {int((~finite).sum())} values; fix the file")
    if probs.min() < 0 or probs.max() > 1:
        raise DataError(f"{path}: probabilities must lie in [0, 1], found range [{probs.min():.3g}, {probs.max():.3g}]")
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
        if len(np.unique(class_ids)) != len(class_ids):
            raise DataError(f"{path}: class_ids {class_ids.tolist()} list a class more than once")
    if not probs.any(axis=0).any():
        raise DataError(f"{path}: probabilities are 0 everywhere for every class; nothing to refine")
    return class_ids.astype(np.int64), probs


def integer_ids(path: Path, raw: np.ndarray) -> np.ndarray:
    """class_ids as stored must be whole numbers: 3.7 is a mistake, not class 3."""
    ids = np.asarray(raw)
    if ids.ndim != 1:
        raise DataError(f"{path}: 'class_ids' must be one-dimensional, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        if not np.issubdtype(ids.dtype, np.floating) or not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
            raise DataError(f"{path}: 'class_ids' must be whole numbers, got {ids.tolist()[:10]}")
    return ids.astype(np.int64)


def check_size(path: Path, got: tuple[int, ...], want: tuple[int, int], what: str) -> None:
    if tuple(got) != tuple(want):
        raise DataError(f"{path}: {what} is {got[1]}x{got[0]} (WxH) but the image is {want[1]}x{want[0]}")


def run_converter(work, out: Path):
    """(result, 0) of a converter script's work, or (None, 2) with one line `g4seg: error:`
    for what a user can fix: bad input (DataError, ConfigError), an --out that is a file or
    cannot be written."""
    import sys

    from g4seg.errors import ConfigError

    try:
        if Path(out).exists() and not Path(out).is_dir():
            raise ConfigError(f"{out}: --out must be a folder")
        return work(), 0
    except (DataError, ConfigError) as e:
        message = str(e)
    except OSError as e:
        message = f"{e.filename or out}: cannot write ({e.strerror or e})"
    print(f"g4seg: error: {message}", file=sys.stderr)
    return None, 2
