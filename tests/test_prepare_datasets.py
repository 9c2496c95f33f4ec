"""Dataset preparation on tiny files the test writes itself."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from datamodules import VOCFolderDataModule
from datamodules import prepare as prepare_datasets


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


def _gt(out, classes):
    dm = VOCFolderDataModule(str(out), classes=classes, split="ImageSets/Segmentation/val.txt")
    dm.setup()
    sample = dm.dataset[0]
    return [[sample.class_names[int(v)] for v in row] for row in sample.gt]


def test_coco_object_from_instances_json_paints_in_order_and_leaves_crowd_out(tmp_path):
    import json

    (tmp_path / "val2014").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    box = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731  polygon of a pixel-aligned box
    anns = [
        {"id": 1, "image_id": 42, "category_id": 1, "iscrowd": 0, "segmentation": box(0, 0, 4, 4), "area": 16, "bbox": [0, 0, 4, 4]},
        {"id": 2, "image_id": 42, "category_id": 90, "iscrowd": 0, "segmentation": box(2, 0, 4, 2), "area": 4, "bbox": [2, 0, 2, 2]},
        # a crowd of stop signs (category 13) over the right columns: left out, so background
        {"id": 3, "image_id": 42, "category_id": 13, "iscrowd": 1, "area": 8, "bbox": [4, 0, 2, 4],
         "segmentation": {"size": [4, 6], "counts": [16, 8]}},
    ]  # fmt: skip
    data = {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 4, "width": 6}],
            "annotations": anns, "categories": [{"id": i, "name": str(i)} for i in prepare_datasets.THING_IDS]}  # fmt: skip
    (tmp_path / "instances_val2014.json").write_text(json.dumps(data))
    code = prepare_datasets.main(["coco-object", "--instances", str(tmp_path / "instances_val2014.json"),
                                  "--images", str(tmp_path / "val2014"), "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    names = _gt(tmp_path / "out", "coco_object")
    assert names[0] == ["person", "person", "toothbrush", "toothbrush", "background", "background"]
    assert names[3] == ["person"] * 4 + ["background"] * 2


def test_context60_from_459_label_mat_files(tmp_path):
    from helpers import context_sources

    # 459-label ids: 2 aeroplane, 284 person, 458 wood, 3 (not among the 59) and 0 (unlabelled) -> background
    voc, _ = context_sources(tmp_path)
    code = prepare_datasets.main(["context", "--annotations", str(tmp_path / "trainval"), "--voc2010", str(voc),
                                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert _gt(tmp_path / "out", "context") == [["aeroplane", "person", "wood"], ["background", "background", "dog"]]
    assert len(prepare_datasets.CONTEXT59_IDS) == 59


def test_context_missing_annotation_names_the_file(tmp_path, capsys):
    from helpers import context_sources

    voc, _ = context_sources(tmp_path, None)
    code = prepare_datasets.main(["context", "--annotations", str(tmp_path / "nope"), "--voc2010", str(voc),
                                  "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert re.fullmatch(r"g4seg: error: \S+2008_000002\.mat: PASCAL Context annotation missing \(.*\)\n", capsys.readouterr().err)
