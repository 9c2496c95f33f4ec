"""ADE20K's 150 classes (SceneParsing order) and the mapping from benchmark class names.

A segmentation ControlNet was trained on ADE20K maps painted with ADE20K's palette, so a
class of another dataset must be painted in the colour of its closest ADE20K class:
first the explicit table below, then an exact ADE20K name, then the most similar ADE20K
name by string similarity (difflib), which is logged. docs/palette.md gives the table with
the reason for each choice; ADE20K has no class for several of them (cutlery, hydrants,
trains, each animal species), so those share a stand-in's colour.
"""

from __future__ import annotations

import difflib
import functools
import logging
import warnings

from g4seg.ade20k_names import SHORT_NAMES

ADE20K = list(SHORT_NAMES)

# VOC, PASCAL Context and COCO-Object names whose ADE20K counterpart is not the same word
# (docs/palette.md: each with its reason; tests check every target is an ADE20K class).
TO_ADE20K = {
    "aeroplane": "airplane", "bird": "animal", "cat": "animal", "cow": "animal", "dog": "animal",
    "horse": "animal", "sheep": "animal", "elephant": "animal", "bear": "animal", "zebra": "animal",
    "giraffe": "animal", "diningtable": "table", "dining table": "table", "motorbike": "minibike",
    "motorcycle": "minibike", "pottedplant": "plant", "potted plant": "plant", "tvmonitor": "television receiver",
    "tv": "television receiver", "train": "bus", "couch": "sofa", "laptop": "computer", "keyboard": "computer",
    "mouse": "computer", "remote": "computer", "cell phone": "computer", "backpack": "bag", "handbag": "bag",
    "suitcase": "bag", "tie": "apparel", "cloth": "apparel", "umbrella": "canopy", "frisbee": "plaything",
    "sports ball": "ball", "kite": "plaything", "skis": "plaything", "snowboard": "plaything",
    "skateboard": "plaything", "surfboard": "plaything", "tennis racket": "plaything", "baseball bat": "plaything",
    "baseball glove": "plaything", "teddy bear": "plaything", "wine glass": "glass", "cup": "glass",
    "fork": "tray", "knife": "tray", "spoon": "tray", "bowl": "plate", "banana": "food", "apple": "food",
    "sandwich": "food", "orange": "food", "broccoli": "food", "carrot": "food", "hot dog": "food",
    "pizza": "food", "donut": "food", "cake": "food", "toaster": "microwave", "scissors": "tray",
    "hair drier": "fan", "toothbrush": "tray", "fire hydrant": "pole", "stop sign": "signboard",
    "parking meter": "pole", "bedclothes": "blanket", "ground": "earth", "window": "windowpane",
    "shelves": "shelf", "sign": "signboard", "platform": "sidewalk", "track": "dirt track", "snow": "land",
    "wood": "fence",
}  # fmt: skip


@functools.cache
def ade20k_index(name: str) -> int:
    """0-based ADE20K class index for a class name of any benchmark."""
    key = name.strip().lower()
    target = TO_ADE20K.get(key, key)
    if target in ADE20K:
        return ADE20K.index(target)
    nearest = difflib.get_close_matches(target, ADE20K, n=1, cutoff=0.0)[0]
    logging.getLogger(__name__).warning("class %r has no ADE20K counterpart; painting it as %r", name, nearest)
    return ADE20K.index(nearest)


@functools.cache
def ade20k_palette() -> tuple[tuple[int, int, int], ...]:
    """ADE20K's colours (150, index = class), as controlnet_aux ships them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from controlnet_aux.util import ade_palette

    palette = tuple(tuple(int(v) for v in c) for c in ade_palette())
    if len(palette) != len(ADE20K):
        raise RuntimeError(f"controlnet_aux's ADE20K palette has {len(palette)} colours, expected {len(ADE20K)}")
    return palette
