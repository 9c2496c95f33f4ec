"""Turns official dataset distributions into the VOC layout the datamodule reads.

    python scripts/prepare_datasets.py coco-object --stuff /data/coco_stuff164k --out /data/coco_object

COCO-Object (81 classes: background + the 80 COCO things) is built the way the benchmarks
of the CLIP segmenters build it (GroupViT's `convert_coco_object.py`, used by SCLIP and
ClearCLIP): from the COCO-Stuff 164k label maps of val2017 (pixel = COCO category id - 1,
255 = unlabelled), each thing id becomes its index among the 80 things + 1, and every stuff
class and the unlabelled pixels become background (0, scored). The thing pixels of
COCO-Stuff come from the COCO instance annotations, overlaps and crowd regions resolved
there. Images are linked (or copied with --copy), label maps written as palette PNGs, and
ImageSets/Segmentation/<split>.txt lists the ids.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# COCO category ids (1-based) that are not used by the 80 thing classes
UNUSED_THING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
THING_IDS = [i for i in range(1, 91) if i not in UNUSED_THING_IDS]  # 80, in the order of the class list


def coco_object_lut() -> np.ndarray:
    """COCO-Stuff pixel value (category id - 1) -> COCO-Object class (0 = background)."""
    lut = np.zeros(256, dtype=np.uint8)
    for index, category in enumerate(THING_IDS):
        lut[category - 1] = index + 1
    return lut


def prepare_coco_object(stuff: Path, out: Path, split: str = "val2017", copy: bool = False) -> int:
    from g4seg.writer import label_png

    images, labels = stuff / "images" / split, stuff / "annotations" / split
    if not labels.is_dir() or not images.is_dir():
        raise SystemExit(f"{stuff}: expected COCO-Stuff 164k layout images/{split}/ and annotations/{split}/")
    lut = coco_object_lut()
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    ids = []
    for png in sorted(labels.glob("*.png")):
        if "TrainIds" in png.name:
            continue
        sample_id = png.stem
        jpg = images / f"{sample_id}.jpg"
        if not jpg.is_file():
            raise SystemExit(f"{jpg}: image of label map {png} is missing")
        target = out / "JPEGImages" / jpg.name
        if not target.exists():
            shutil.copyfile(jpg, target) if copy else os.symlink(jpg.resolve(), target)
        mapped = lut[np.asarray(Image.open(png), dtype=np.uint8)]
        (out / "SegmentationClass" / f"{sample_id}.png").write_bytes(label_png(mapped))
        ids.append(sample_id)
    split_file = out / "ImageSets" / "Segmentation" / "val.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{i}\n" for i in ids))
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    coco = sub.add_parser("coco-object", help="COCO-Object from COCO-Stuff 164k label maps")
    coco.add_argument("--stuff", required=True, type=Path, help="COCO-Stuff 164k root (images/, annotations/)")
    coco.add_argument("--out", required=True, type=Path)
    coco.add_argument("--split", default="val2017")
    coco.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args(argv)
    n = prepare_coco_object(args.stuff, args.out, args.split, args.copy)
    print(f"{n} samples in {args.out} (use data.init_args.root: {args.out}, classes: coco_object, "
          "split: ImageSets/Segmentation/val.txt)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
