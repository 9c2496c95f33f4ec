"""Reading an image file as an RGB array, with an error that names the file. The one
reader of the dataset, the Python API and the report's gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError


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
