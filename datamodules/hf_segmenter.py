"""Any `transformers` semantic-segmentation model as the coarse source (G4Seg's Table V:
SegFormer and Mask2Former masks on ADE20K, refined).

The model's classes are its `id2label` names; each is mapped to the dataset class of the
same name (case and the synonyms after ";" or "," ignored) or as `mapping` says, and a
dataset class gets the summed probability of the model classes mapped to it. Model classes
that map to no dataset class count as background, and the sample's notes say how many.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from g4seg.errors import ConfigError
from g4seg.models.hf_segmentation import HF_SEG_GET, load_segmenter, semantic_probs
from g4seg.types import ClassProbs

from .coarse import ImageByImageProducer

TINY_LABELS = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]  # fmt: skip


def names_of(label: str) -> set[str]:
    return {n.strip().lower() for n in re.split(r"[;,]", label) if n.strip()}


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
            index = {}
            for c, name in enumerate(class_names):
                for n in names_of(name):
                    index.setdefault(n, c)
            for label, target in self.mapping.items():
                if target not in class_names:
                    raise ConfigError(f"HFSegmenter mapping: {label!r} -> {target!r}, not a class of the dataset")
            ids = []
            for label in self.model_labels:
                if label in self.mapping:
                    ids.append(list(class_names).index(self.mapping[label]))
                else:
                    ids.append(next((index[n] for n in names_of(label) if n in index), 0))
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
