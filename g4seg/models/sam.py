"""Segment Anything from `transformers`: loading, one copy per checkpoint, and the image
embedding computed once per image.

SAM's image encoder is nearly all of its cost; the prompt encoder and mask decoder are
small. So a `SharedSam` keeps the last few images' embeddings: every class, every
component, every iteration, and every strategy on the same checkpoint (SAM alone, G4Seg
then SAM, SAM then DenseCRF) reuse one encoder pass per image.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from ..errors import ConfigError
from ..precision import autocast
from . import hub

SAM_GET = ("hf download facebook/sam-vit-base --local-dir sam-vit-base (also sam-vit-large, sam-vit-huge; "
           "HQ-SAM: syscv-community/sam-hq-vit-base; SAM 2: facebook/sam2.1-hiera-large)")
CACHED_IMAGES = 4


KINDS = {"sam": ("SamModel", "SamProcessor", "SamImageProcessor"),
         "sam_hq": ("SamHQModel", "SamProcessor", "SamImageProcessor"),
         "sam2": ("Sam2Model", "Sam2Processor", "Sam2ImageProcessor")}  # fmt: skip
TINY = {"tiny": "sam", "tiny-hq": "sam_hq", "tiny-sam2": "sam2"}


def model_type(model: str) -> str:
    """"sam", "sam_hq" or "sam2", from the checkpoint's config.json."""
    from transformers import AutoConfig

    kind = AutoConfig.from_pretrained(model).model_type
    if kind not in KINDS:
        raise ConfigError(f"{model}: a {kind!r} checkpoint; SAMRefiner runs SAM, HQ-SAM and SAM 2 ({', '.join(KINDS)})")
    return kind


def load_sam(model: str):
    """(model, processor, kind) from a local folder or a hub id (offline: the local cache);
    "tiny", "tiny-hq", "tiny-sam2" are random."""
    import transformers as tf

    if model in TINY:
        from .tiny import tiny_sam

        kind = TINY[model]
        return tiny_sam(kind), getattr(tf, KINDS[kind][1])(getattr(tf, KINDS[kind][2])()), kind
    hub.require_local(model, "folder", "the SAM model", SAM_GET, "model")
    try:
        kind = model_type(model)
    except ConfigError:
        raise
    except hub.load_errors() as e:
        raise hub.missing(model, f"cannot load SAM: {hub.why(e)}", "a SAM checkpoint", SAM_GET, "model") from None
    model_cls, processor_cls, image_cls = (getattr(tf, n) for n in KINDS[kind])
    try:
        sam = model_cls.from_pretrained(model)
    except hub.load_errors() as e:
        raise hub.missing(model, f"cannot load SAM: {hub.why(e)}", "a SAM checkpoint", SAM_GET, "model") from None
    try:
        processor = processor_cls.from_pretrained(model)
    except (OSError, ValueError, TypeError):
        processor = processor_cls(image_cls())  # the model's own preprocessing defaults
    return sam, processor, kind


class SharedSam:
    """One SAM per checkpoint in a process, with its recent image embeddings."""

    def __init__(self, model: str) -> None:
        self.name = model
        self.model, self.processor, self.kind = load_sam(model)
        self.model.eval().requires_grad_(False)
        vision = self.model.config.vision_config
        self.input_size = int(vision.backbone_config.image_size[0] if self.kind == "sam2" else vision.image_size)
        self.hq = self.kind == "sam_hq"  # its decoder also reads the first ViT block's features
        self._embeddings: OrderedDict[tuple, tuple] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batch(self, embedding, n: int) -> dict:
        """The decoder's image inputs for n prompts of one image."""
        if self.kind == "sam2":
            return {"image_embeddings": [e.expand(n, *e.shape[1:]) for e in embedding]}
        if self.hq:
            embedding, intermediate = embedding
            return {"image_embeddings": embedding.expand(n, -1, -1, -1),
                    "intermediate_embeddings": [t.expand(n, *t.shape[1:]) for t in intermediate]}  # fmt: skip
        return {"image_embeddings": embedding.expand(n, -1, -1, -1)}

    def upsample(self, low_res: torch.Tensor, size: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Logits [J, H, W] at the image's size from SAM's [J, 256, 256], by the processor."""
        ip = self.processor.image_processor
        if self.kind == "sam2":
            return ip.post_process_masks([low_res[:, None]], [list(size)], binarize=False)[0][:, 0]
        return ip.post_process_masks([low_res[:, None]], [list(size)], [list(resized)], binarize=False)[0][:, 0]

    @torch.no_grad()
    def embed(self, sample_id: str, image: np.ndarray, precision: str = "fp32") -> tuple[torch.Tensor, tuple[int, int]]:
        """(image embedding (SAM: [1, 256, 64, 64]; HQ-SAM: with its intermediate embeddings;
        SAM 2: its feature pyramid), resized input size (h, w)) of an RGB uint8 image."""
        key = (sample_id, str(self.device), precision, image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest())
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        inputs = self.processor(images=image, return_tensors="pt")
        with autocast(precision, self.device):
            embedding = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        if self.kind == "sam2":  # a square resize, no padding; the embedding is a feature pyramid
            resized = (self.input_size, self.input_size)
        else:  # the longest side to the input size, then padded
            resized = tuple(int(v) for v in inputs["reshaped_input_sizes"][0])
        value = (embedding, resized)
        self._embeddings[key] = value
        while len(self._embeddings) > CACHED_IMAGES:
            self._embeddings.popitem(last=False)
        return value


def shared_sam(model: str) -> SharedSam:
    return hub.shared("sam", (model,), lambda: SharedSam(model))
