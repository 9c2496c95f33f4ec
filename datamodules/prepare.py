"""Turns official dataset distributions into the VOC layout the datamodule reads
(JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/val.txt).

    python scripts/prepare_datasets.py coco-object --stuff /data/coco_stuff164k --out /data/coco_object
    python scripts/prepare_datasets.py coco-object --instances annotations/instances_val2017.json \
        --images /data/coco/val2017 --out /data/coco_object
    python scripts/prepare_datasets.py context --annotations /data/pascal_context/trainval \
        --voc2010 /data/VOCdevkit/VOC2010 --out /data/context60

COCO-Object (background + the 80 COCO things) is built the way the CLIP segmenters'
benchmarks build it (GroupViT's `convert_coco_object.py`, used by SCLIP and ClearCLIP): from
the COCO-Stuff 164k label maps of val2017 (pixel = COCO category id - 1, 255 = unlabelled),
each thing becomes its index among the 80 things + 1, every stuff class and the unlabelled
pixels become background (0, scored). `--instances` builds the same maps from a COCO
instances json (2014 or 2017) the way COCO-Stuff made its thing pixels
(cocostuffapi `cocoSegmentationToSegmentationMap`, defaults): non-crowd annotations painted
in file order, a later one over an earlier one; crowd regions are left out, so they end as
background.

PASCAL Context 60 (background + the 59 most frequent classes) from the official 459-label
annotations (`trainval/<id>.mat`, key `LabelMap`, ids of `labels.txt`): the 59 label ids
of mmsegmentation's `pascal_context.py` `_mapping`, sorted, become 1..59 (alphabetical, the
order of the class list); every other label and the unlabelled 0 become background, scored
(the Context-60 setting SCLIP and G4Seg report). The split is VOC2010's: val = 5,105 images.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from g4seg.errors import DataError

from .io import run_converter

# COCO category ids (1-based) that are not used by the 80 thing classes
UNUSED_THING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
THING_IDS = [i for i in range(1, 91) if i not in UNUSED_THING_IDS]  # 80, in the order of the class list

# PASCAL Context 459-label ids of the 59 classes (mmsegmentation's `_mapping` without its 0)
CONTEXT59_IDS = sorted([
    2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420,
    454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458,
    34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
])  # fmt: skip


def coco_object_lut() -> np.ndarray:
    """COCO-Stuff pixel value (category id - 1) -> COCO-Object class (0 = background)."""
    lut = np.zeros(256, dtype=np.uint8)
    for index, category in enumerate(THING_IDS):
        lut[category - 1] = index + 1
    return lut


def context60_lut() -> np.ndarray:
    """PASCAL Context 459-label id -> Context-60 class (0 = background)."""
    lut = np.zeros(460, dtype=np.uint8)
    lut[CONTEXT59_IDS] = np.arange(1, 60, dtype=np.uint8)
    return lut


def write_layout(out: Path, samples: Iterable[tuple[str, Path, Callable[[], np.ndarray]]], copy: bool) -> int:
    """Links (or copies) each image and writes its label map and the split file."""
    from g4seg.report.palette import label_png

    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    ids = []
    for sample_id, image, label in samples:
        if not image.is_file():
            raise DataError(f"{image}: image of sample {sample_id} is missing")
        target = out / "JPEGImages" / f"{sample_id}{image.suffix}"
        if not target.exists():
            shutil.copyfile(image, target) if copy else os.symlink(image.resolve(), target)
        (out / "SegmentationClass" / f"{sample_id}.png").write_bytes(label_png(label()))
        ids.append(sample_id)
    split_file = out / "ImageSets" / "Segmentation" / "val.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{i}\n" for i in ids))
    return len(ids)


def stuff_labels(png: Path) -> np.ndarray:
    """A COCO-Stuff label map: one 8-bit channel of category ids - 1 (255 unlabelled)."""
    try:
        with Image.open(png) as im:
            im.load()
            mode, labels = im.mode, np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated, empty or not an image
        raise DataError(f"{png}: unreadable COCO-Stuff label map ({type(e).__name__}: {e})") from None
    if mode not in ("L", "P") or labels.ndim != 2:
        raise DataError(f"{png}: a COCO-Stuff label map has one 8-bit channel of class ids, this one is {mode} "
                        f"{labels.shape}")  # fmt: skip
    return labels.astype(np.uint8)


def coco_object_from_stuff(stuff: Path, split: str):
    images, labels = stuff / "images" / split, stuff / "annotations" / split
    if not labels.is_dir() or not images.is_dir():
        raise DataError(f"{stuff}: expected COCO-Stuff 164k layout images/{split}/ and annotations/{split}/")
    lut = coco_object_lut()
    for png in sorted(labels.glob("*.png")):
        if "TrainIds" not in png.name:
            yield png.stem, images / f"{png.stem}.jpg", lambda png=png: lut[stuff_labels(png)]


def coco_object_from_instances(instances: Path, images: Path):
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DataError("--instances needs pycocotools: pip install -e '.[data]'") from None
    if not instances.is_file():
        raise DataError(f"{instances}: COCO instances json not found")
    coco = COCO(str(instances))
    to_class = {category: index + 1 for index, category in enumerate(THING_IDS)}

    def label(image_id: int) -> np.ndarray:
        info = coco.imgs[image_id]
        out = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)):
            if ann["category_id"] not in to_class:
                raise DataError(f"{instances}: annotation {ann['id']} has category {ann['category_id']}, not a COCO thing")
            out[coco.annToMask(ann) == 1] = to_class[ann["category_id"]]
        return out

    for image_id in sorted(coco.imgs):
        name = coco.imgs[image_id]["file_name"]
        yield Path(name).stem, images / name, lambda image_id=image_id: label(image_id)


def context60(annotations: Path, voc2010: Path, split_file: Path | None):
    from scipy.io import loadmat

    split_file = split_file or voc2010 / "ImageSets" / "Main" / "val.txt"
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found (VOC2010 ImageSets/Main/val.txt is the Context val split)")
    lut = context60_lut()

    def label(mat: Path) -> np.ndarray:
        if not mat.is_file():
            raise DataError(f"{mat}: PASCAL Context annotation missing (expected trainval/<id>.mat)")
        try:
            content = loadmat(str(mat))
        except Exception as e:  # noqa: BLE001 - scipy raises MatReadError, ValueError, OSError, ... on bad files
            raise DataError(f"{mat}: unreadable PASCAL Context annotation ({type(e).__name__}: {e})") from None
        if "LabelMap" not in content:
            raise DataError(f"{mat}: no LabelMap in it (keys: {sorted(k for k in content if not k.startswith('__'))}); "
                            "expected the official trainval/<id>.mat")  # fmt: skip
        labels = np.asarray(content["LabelMap"])
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{mat}: LabelMap must be a 2-D integer map, got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() > 459:
            raise DataError(f"{mat}: LabelMap values {labels.min()}..{labels.max()} outside the 459 labels")
        return lut[labels]

    for sample_id in (line.split()[0] for line in split_file.read_text().splitlines() if line.strip()):
        yield sample_id, voc2010 / "JPEGImages" / f"{sample_id}.jpg", lambda m=annotations / f"{sample_id}.mat": label(m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    coco = sub.add_parser("coco-object", help="COCO-Object from COCO-Stuff 164k label maps or an instances json")
    source = coco.add_mutually_exclusive_group(required=True)
    source.add_argument("--stuff", type=Path, help="COCO-Stuff 164k root (images/, annotations/)")
    source.add_argument("--instances", type=Path, help="COCO instances json (needs --images)")
    coco.add_argument("--images", type=Path, help="image folder of the instances json")
    coco.add_argument("--split", default="val2017", help="COCO-Stuff split folder")
    ctx = sub.add_parser("context", help="PASCAL Context 60 from the official 459-label .mat files")
    ctx.add_argument("--annotations", required=True, type=Path, help="folder of <id>.mat (trainval/)")
    ctx.add_argument("--voc2010", required=True, type=Path, help="VOCdevkit/VOC2010 (JPEGImages, ImageSets)")
    ctx.add_argument("--split-file", type=Path, help="ids to prepare (default VOC2010 ImageSets/Main/val.txt)")
    for p in (coco, ctx):
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args(argv)
    if args.dataset == "context":
        samples, classes = context60(args.annotations, args.voc2010, args.split_file), "context"
    elif args.stuff:
        samples, classes = coco_object_from_stuff(args.stuff, args.split), "coco_object"
    else:
        if not args.images:
            parser.error("--instances needs --images")
        samples, classes = coco_object_from_instances(args.instances, args.images), "coco_object"
    n, code = run_converter(lambda: write_layout(args.out, samples, args.copy), args.out)
    if code:
        return code
    print(f"{n} samples in {args.out} (use data.init_args.root: {args.out}, classes: {classes}, "
          "split: ImageSets/Segmentation/val.txt)")  # fmt: skip
    return 0
