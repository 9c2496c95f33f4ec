"""Class-name presets of the benchmarks G4Seg reports on.

Index = class id in the label PNGs; 0 is background in every preset (ADE20K's "other").
"""

from __future__ import annotations

from pathlib import Path

from g4seg.errors import ConfigError

VOC = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse "
    "motorbike person pottedplant sheep sofa train tvmonitor"
).split()

# PASCAL Context, 59 most frequent classes + background (the "Context-60" setting).
CONTEXT = (
    "background aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus "
    "cabinet car cat ceiling chair cloth computer cow cup curtain dog door fence floor flower food "
    "grass ground horse keyboard light motorbike mountain mouse person plate platform pottedplant "
    "road rock sheep shelves sidewalk sign sky snow sofa table track train tree truck tvmonitor "
    "wall water window wood"
).split()

# COCO-Object: the 80 COCO thing classes + background, in the contiguous order of the
# COCO-Object label maps used by open-vocabulary segmentation benchmarks.
COCO_OBJECT = ["background"] + [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

# ADE20K SceneParsing 150 (ADEChallengeData2016), in its label maps' order (1..150; the
# SegFormer / Mask2Former ADE checkpoints' id2label, shifted by one). Its 0 is "other" and is
# ignored in evaluation: set the datamodule's `ignore_zero: true` (mmseg's reduce_zero_label).
ADE20K = ["background"] + [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]  # fmt: skip

PRESETS: dict[str, list[str]] = {"voc": VOC, "context": CONTEXT, "coco_object": COCO_OBJECT, "ade20k": ADE20K}

# Names that read better in a prompt than the dataset's compact spelling.
PROMPT_NAMES = {
    "aeroplane": "aeroplane", "diningtable": "dining table", "pottedplant": "potted plant",
    "tvmonitor": "tv monitor", "motorbike": "motorbike", "bedclothes": "bedclothes",
}  # fmt: skip

# Other label sets' words for VOC's compact names, matched after exact names (a model's
# "table" becomes VOC's diningtable, but its "coffee table" does not: that is no alias).
NAME_ALIASES = {
    "aeroplane": ("airplane",), "diningtable": ("dining table", "table"), "motorbike": ("motorcycle",),
    "pottedplant": ("potted plant", "plant"), "sofa": ("couch",), "tvmonitor": ("tv monitor", "tv", "monitor"),
}  # fmt: skip


def resolve_classes(classes: str | list[str]) -> list[str]:
    """A preset name, a path to a text file (one name a line, background first), or a list."""
    if isinstance(classes, (list, tuple)):
        names = list(classes)
    elif classes in PRESETS:
        names = list(PRESETS[classes])
    elif Path(classes).is_file():
        names = [line.strip() for line in Path(classes).read_text().splitlines() if line.strip()]
    else:
        raise ConfigError(
            f"unknown class preset {classes!r}: use one of {sorted(PRESETS)}, a list of names, "
            "or the path of a text file with one class name a line (background first)"
        )
    if len(names) < 2:
        raise ConfigError(f"class list {classes!r} needs background and at least one class, got {names}")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"class list {classes!r} has empty or repeated names; each class needs its own name")
    if len(names) > 255:
        raise ConfigError(f"class list {classes!r} has {len(names)} classes; label PNGs hold at most 255")
    return names


def check_prompt(template: str, key: str = "prompt") -> str:
    """A prompt template with exactly one `{}`, the class name's place."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ConfigError(f"{key} {template!r} is not a template ({e}); write it with one {{}} for the class name") from None
    if fields != [""]:
        raise ConfigError(f"{key} {template!r} needs exactly one {{}} for the class name, and no other field; "
                          f"it has {len(fields)}")  # fmt: skip
    return template


def prompt_name(name: str) -> str:
    return PROMPT_NAMES.get(name, name)
