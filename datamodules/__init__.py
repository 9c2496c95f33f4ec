"""Datasets in VOC layout and the coarse masks to refine."""

from .classes import PRESETS, resolve_classes
from .coarse import CoarseFromFiles, CoarseSource, SyntheticDegradation
from .folder import VOCFolderDataModule
from .io import DataError

__all__ = [
    "PRESETS", "CoarseFromFiles", "CoarseSource", "DataError", "SyntheticDegradation",
    "VOCFolderDataModule", "resolve_classes",
]  # fmt: skip
