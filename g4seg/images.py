"""Reading an image file as an RGB array, with an error that names the file. The one
reader of the dataset, the Python API and the report's gallery.

Photos are read as they are displayed: a camera's EXIF orientation is applied
(`PIL.ImageOps.exif_transpose`), because masks and ground truth are drawn on the displayed
image; a sideways read would pair pixels with the wrong labels (and fail on non-square
images with a size mismatch that names no EXIF)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .files import read_hashed


def read_image(path: Path, digests: dict[str, str] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; `digests` notes the hash of the bytes decoded (`read_hashed`)."""
    try:
        with Image.open(io.BytesIO(read_hashed(path, digests))) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({why_unreadable(path, e)})") from None


def why_unreadable(path: Path, error: Exception) -> str:
    """PIL's reason; decoded from bytes in memory, it would name a BytesIO, not the file."""
    return f"cannot identify image file '{path}'" if isinstance(error, UnidentifiedImageError) else str(error)
