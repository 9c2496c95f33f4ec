"""The segmentation ControlNet's colours: every benchmark class lands on an ADE20K class by
the table (never by the spelling fallback), and docs/palette.md says what the code does."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from g4seg.ade20k_names import SHORT_NAMES
from g4seg.classes import ADE20K as ADE20K_PRESET
from g4seg.classes import PRESETS
from strategies.injectors.ade20k import ADE20K, TO_ADE20K, ade20k_index, ade20k_palette

DOC = Path(__file__).resolve().parents[1] / "docs" / "palette.md"


def test_objectinfo150_first_synonyms_are_the_checkpoints_short_labels():
    # two writings from two sources: objectInfo150's synonym lines, transformers' id2label
    assert list(SHORT_NAMES) == ADE20K_PRESET[1:] == ADE20K and len(ADE20K) == 150


def test_every_table_target_is_an_ade20k_class():
    assert sorted(t for t in TO_ADE20K.values() if t not in ADE20K) == []


@pytest.mark.parametrize("preset", ["voc", "context", "coco_object"])
def test_no_preset_class_falls_back_to_spelling(preset, caplog):
    ade20k_index.cache_clear()
    with caplog.at_level(logging.WARNING):
        for name in PRESETS[preset][1:]:
            ade20k_index(name)
    assert "no ADE20K counterpart" not in caplog.text


def test_the_documented_table_is_the_codes():
    rows = re.findall(r"^\| (voc|context|coco_object) \| ([^|]+) \| ([^|]+) \((\d+), \((\d+), (\d+), (\d+)\)\) \|",
                      DOC.read_text(), flags=re.M)  # fmt: skip
    palette = ade20k_palette()
    documented = {(p, n.strip()) for p, n, *_ in rows}
    for preset, name, target, index, *rgb in rows:
        i = ade20k_index(name.strip())
        assert (ADE20K[i], i, palette[i]) == (target.strip(), int(index), tuple(int(v) for v in rgb)), name
    renamed = {(p, n) for p in ("voc", "context", "coco_object") for n in PRESETS[p][1:] if TO_ADE20K.get(n, n) != n}
    assert documented == renamed
