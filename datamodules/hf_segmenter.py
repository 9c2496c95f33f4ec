"""Any `transformers` semantic-segmentation model as the coarse source (G4Seg's Table V:
SegFormer and Mask2Former masks on ADE20K, refined).

The model's classes are its `id2label` names; each is mapped as `mapping` says, else to the
dataset class named by the first of its synonyms (in the order the label writes them, case
ignored) that names one, else to the first that is an alias of one (`classes.NAME_ALIASES`:
VOC's "diningtable" is a "table"), else to background; a dataset class gets the summed
probability of the model classes mapped to it, and the notes say how many map to none.
Written order, not a set, decides, so the mapping is the same in every process. A label is
split into synonyms at "," and ";", except ADE20K's 150 labels, which are read in all three
spellings of their checkpoints (`g4seg.ade20k_names`: CSAIL's "pool;table;billiard;table"
is the pool table, not a table).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from g4seg.ade20k_names import ade20k_synonyms
from g4seg.classes import NAME_ALIASES
from g4seg.errors import ConfigError
from g4seg.models.hf_segmentation import HF_SEG_GET, load_segmenter, semantic_probs
from g4seg.types import ClassProbs

from .coarse import ImageByImageProducer

TINY_LABELS = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]  # fmt: skip


def split_names(label: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip().lower() for n in re.split(r"[;,]", label) if n.strip()))


def names_of(label: str) -> tuple[str, ...]:
    """A model label's synonyms in written order."""
    known = ade20k_synonyms(label)
    return known if known is not None else split_names(label)


def label_targets(model_labels: Sequence[str], class_names: Sequence[str], mapping: dict[str, str]) -> list[int]:
    """The dataset class id of each model label (0: none)."""
    exact: dict[str, int] = {}
    alias: dict[str, int] = {}
    for c, name in enumerate(class_names):
        for n in split_names(name):  # a dataset's own names, never widened to their synonyms
            exact.setdefault(n, c)
        for n in NAME_ALIASES.get(name.strip().lower(), ()):
            alias.setdefault(n, c)
    ids = []
    for label in model_labels:
        if label in mapping:
            ids.append(list(class_names).index(mapping[label]))
            continue
        names = names_of(label)
        ids.append(next((exact[n] for n in names if n in exact), next((alias[n] for n in names if n in alias), 0)))
    return ids


class HFSegmenter(ImageByImageProducer):
    """Args:
    model: a local folder (`save_pretrained`) or cached hub id of a transformers semantic
        segmentation model with its image processor; "tiny-segformer" / "tiny-mask2former"
        (random, with the VOC classes) for tests.
    mapping: {model label: dataset class name} for names that differ (e.g. ADE20K's
        "airplane" -> VOC's "aeroplane"); the rest map by name.
    """

    FILES_NEEDED = {"model": f"the segmentation model: {HF_SEG_GET}"}

    def __init__(self, model: str = "tiny-segformer", mapping: dict[str, str] | None = None) -> None:
        super().__init__()
        self.model_name, self.mapping = model, dict(mapping or {})
        net, self.processor, self.random_weights = load_segmenter(model, TINY_LABELS)
        self.net = net.requires_grad_(False)  # a submodule: it follows the LightningModule to its device
        self.model_labels = [str(net.config.id2label[i]) for i in range(len(net.config.id2label))]
        unknown = sorted(set(self.mapping) - set(self.model_labels))
        if unknown:
            raise ConfigError(f"HFSegmenter mapping: {unknown} are not labels of {model} (it has e.g. "
                              f"{self.model_labels[:5]})")  # fmt: skip
        self._targets: dict[tuple[str, ...], tuple[torch.Tensor, int]] = {}

    def targets(self, class_names: Sequence[str]) -> tuple[torch.Tensor, int]:
        """(dataset class id of each model class, how many map to a real class)."""
        key = tuple(class_names)
        if key not in self._targets:
            for label, target in self.mapping.items():
                if target not in class_names:
                    raise ConfigError(f"HFSegmenter mapping: {label!r} -> {target!r}, not a class of the dataset")
            ids = label_targets(self.model_labels, class_names, self.mapping)
            self._targets[key] = (torch.tensor(ids), sum(1 for i in ids if i != 0))
        return self._targets[key]

    def make(self, sample_id: str, image: np.ndarray, gt: np.ndarray, num_classes: int, class_names=None,
             digests=None) -> ClassProbs:  # fmt: skip
        class_names = list(class_names or [f"class {i}" for i in range(num_classes)])
        target, mapped = self.targets(class_names)
        scores = semantic_probs(self.net, self.processor, image)  # [M, H, W]
        per_class = torch.zeros(num_classes, *scores.shape[1:]).index_add_(0, target, scores)
        present = sorted({0} | set(torch.unique(per_class.argmax(0)).tolist()))
        probs = per_class[present]
        probs = probs / probs.sum(0, keepdim=True).clamp_min(1e-12)
        notes = [f"{len(self.model_labels) - mapped} of {len(self.model_labels)} classes of {self.model_name} map to "
                 "no dataset class and count as background"] if mapped < len(self.model_labels) else []  # fmt: skip
        if self.random_weights:
            notes.append(f"coarse masks from {self.model_name}, random (untrained) weights")
        return ClassProbs(torch.tensor(present, dtype=torch.int64), probs.float(), tuple(notes))
