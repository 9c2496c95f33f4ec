"""Dataset preparation on tiny files the test writes itself."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from conftest import ROOT
from datamodules import VOCFolderDataModule

sys.path.insert(0, str(ROOT / "scripts"))
import prepare_datasets  # noqa: E402


def test_coco_object_from_coco_stuff_label_maps(tmp_path):
    stuff = tmp_path / "stuff"
    (stuff / "images" / "val2017").mkdir(parents=True)
    (stuff / "annotations" / "val2017").mkdir(parents=True)
    # COCO-Stuff pixel = category id - 1: person 0, stop sign 12, toothbrush 89, a stuff class 100, unlabelled 255
    label = np.array([[0, 12, 89], [100, 255, 0]], dtype=np.uint8)
    Image.fromarray(label).save(stuff / "annotations" / "val2017" / "000000000139.png")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(stuff / "images" / "val2017" / "000000000139.jpg")
    assert prepare_datasets.main(["coco-object", "--stuff", str(stuff), "--out", str(tmp_path / "out")]) == 0
    dm = VOCFolderDataModule(str(tmp_path / "out"), classes="coco_object", split="ImageSets/Segmentation/val.txt")
    dm.setup()
    sample = dm.dataset[0]
    names = [[sample.class_names[int(v)] for v in row] for row in sample.gt]
    assert names == [["person", "stop sign", "toothbrush"], ["background", "background", "person"]]
    assert len(prepare_datasets.THING_IDS) == 80 and len(sample.class_names) == 81
