"""Datasets in VOC layout and the coarse masks to refine (built on `g4seg` only)."""

from g4seg.classes import PRESETS, resolve_classes

from .clip_es import CLIPES
from .clip_segmenters import SCLIP, ClearCLIP, MaskCLIP
from .coarse import CoarseFromFiles, CoarseSource, SyntheticDegradation
from .folder import VOCFolderDataModule
from .hf_segmenter import HFSegmenter
from .io import DataError

__all__ = [
    "CLIPES", "PRESETS", "SCLIP", "ClearCLIP", "HFSegmenter", "MaskCLIP", "CoarseFromFiles", "CoarseSource", "DataError", "SyntheticDegradation",
    "VOCFolderDataModule", "resolve_classes",
]  # fmt: skip
