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
from pathlib import Path

import numpy as np
import torch

from g4seg.errors import ConfigError, ModelNotFoundError
from g4seg.models.diffusion import looks_local

SAM_HINT = (
    "Download a SAM checkpoint on a machine with internet access, e.g.\n"
    "  huggingface-cli download facebook/sam-vit-base --local-dir sam-vit-base\n"
    "(also facebook/sam-vit-large, facebook/sam-vit-huge, HQ-SAM: syscv-community/sam-hq-vit-base ...), copy the\n"
    "folder here and set `model:` to its path."
)
CACHED_IMAGES = 4


def tiny_sam(seed: int = 0, hq: bool = False):
    """A random SAM (~4.8 M parameters; HQ-SAM a little more): 2-layer, 32-wide ViT, SAM's own
    prompt encoder and mask decoder, 1024 input; built offline from its config."""
    import transformers as tf

    config, vision, model = ((tf.SamHQConfig, tf.SamHQVisionConfig, tf.SamHQModel) if hq
                             else (tf.SamConfig, tf.SamVisionConfig, tf.SamModel))  # fmt: skip
    small = vision(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, global_attn_indexes=[1])
    extra = {"mask_decoder_config": tf.SamHQMaskDecoderConfig(vit_dim=32).to_dict()} if hq else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(config(vision_config=small.to_dict(), **extra))


def model_type(model: str) -> str:
    """"sam" or "sam_hq", from the checkpoint's config.json (SAM 2's API is another one)."""
    from transformers import AutoConfig

    kind = AutoConfig.from_pretrained(model).model_type
    if kind not in ("sam", "sam_hq"):
        raise ConfigError(f"{model}: a {kind!r} checkpoint; SAMRefiner runs SAM and HQ-SAM (model_type sam, sam_hq)")
    return kind


def load_sam(model: str):
    """(SamModel or SamHQModel, its processor) from a local folder or a hub id (offline:
    the local cache); "tiny" / "tiny-hq" are random."""
    import transformers as tf

    if model in ("tiny", "tiny-hq"):
        return tiny_sam(hq=model == "tiny-hq"), tf.SamProcessor(tf.SamImageProcessor())
    if looks_local(model) and not Path(model).expanduser().is_dir():
        raise ModelNotFoundError(f"{model}: SAM model folder does not exist.\n{SAM_HINT}")
    try:
        kind = model_type(model)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load SAM {model!r}: {str(e).splitlines()[0]}\n{SAM_HINT}") from None
    try:
        sam = (tf.SamHQModel if kind == "sam_hq" else tf.SamModel).from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"cannot load SAM {model!r}: {str(e).splitlines()[0]}\n{SAM_HINT}") from None
    try:
        processor = tf.SamProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError):
        processor = tf.SamProcessor(tf.SamImageProcessor())  # SAM's own preprocessing: longest side 1024, ImageNet stats
    return sam, processor


class SharedSam:
    """One SAM per checkpoint in a process, with its recent image embeddings."""

    def __init__(self, model: str) -> None:
        self.name = model
        self.model, self.processor = load_sam(model)
        self.model.eval().requires_grad_(False)
        self.input_size = int(self.model.config.vision_config.image_size)
        self.hq = self.model.config.model_type == "sam_hq"  # its decoder also reads the first ViT block's features
        self._embeddings: OrderedDict[tuple, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> SharedSam:
        if torch.device(device) != self.device:
            self.model.to(device)
            self._embeddings.clear()
        return self

    @torch.no_grad()
    def embed(self, sample_id: str, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(image embedding [1, 256, 64, 64] (HQ-SAM: with its intermediate embeddings),
        resized input size (h, w)) of an RGB uint8 image."""
        key = (sample_id, str(self.device), image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest())
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        inputs = self.processor(images=image, return_tensors="pt")
        embedding = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        value = (embedding, tuple(int(v) for v in inputs["reshaped_input_sizes"][0]))
        self._embeddings[key] = value
        while len(self._embeddings) > CACHED_IMAGES:
            self._embeddings.popitem(last=False)
        return value


_LOADED: dict[str, SharedSam] = {}


def shared_sam(model: str) -> SharedSam:
    key = model if model in ("tiny", "tiny-hq") else str(Path(model).expanduser().resolve()) if looks_local(model) else model
    if key not in _LOADED:
        _LOADED[key] = SharedSam(model)
    return _LOADED[key]
