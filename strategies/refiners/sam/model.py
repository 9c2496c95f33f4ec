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
    "(also facebook/sam-vit-large, facebook/sam-vit-huge; HQ-SAM: syscv-community/sam-hq-vit-base ...;\n"
    "SAM 2: facebook/sam2.1-hiera-large ...), copy the folder here and set `model:` to its path."
)
CACHED_IMAGES = 4


KINDS = {"sam": ("SamModel", "SamProcessor", "SamImageProcessor"),
         "sam_hq": ("SamHQModel", "SamProcessor", "SamImageProcessor"),
         "sam2": ("Sam2Model", "Sam2Processor", "Sam2ImageProcessor")}  # fmt: skip
TINY = {"tiny": "sam", "tiny-hq": "sam_hq", "tiny-sam2": "sam2"}


def tiny_sam(kind: str = "sam", seed: int = 0):
    """A random SAM / HQ-SAM / SAM 2 (~5 M parameters): a small image encoder (2-layer,
    32-wide ViT; a 5-block Hiera for SAM 2) with the model's own prompt encoder and mask
    decoder, 1024 input; built offline from its config."""
    import transformers as tf

    if kind == "sam2":
        hiera = tf.Sam2HieraDetConfig(hidden_size=16, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                      num_attention_heads_per_stage=[1, 1, 1, 1], global_attention_blocks=[3])  # fmt: skip
        vision = tf.Sam2VisionConfig(backbone_config=hiera.to_dict(), backbone_channel_list=[128, 64, 32, 16])
        config = tf.Sam2Config(vision_config=vision.to_dict())
    else:
        hq = kind == "sam_hq"
        vision = (tf.SamHQVisionConfig if hq else tf.SamVisionConfig)(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, global_attn_indexes=[1])
        extra = {"mask_decoder_config": tf.SamHQMaskDecoderConfig(vit_dim=32).to_dict()} if hq else {}
        config = (tf.SamHQConfig if hq else tf.SamConfig)(vision_config=vision.to_dict(), **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(tf, KINDS[kind][0])(config)


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
        kind = TINY[model]
        return tiny_sam(kind), getattr(tf, KINDS[kind][1])(getattr(tf, KINDS[kind][2])()), kind
    if looks_local(model) and not Path(model).expanduser().is_dir():
        raise ModelNotFoundError(f"{model}: SAM model folder does not exist.\n{SAM_HINT}")
    try:
        kind = model_type(model)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load SAM {model!r}: {str(e).splitlines()[0]}\n{SAM_HINT}") from None
    model_cls, processor_cls, image_cls = (getattr(tf, n) for n in KINDS[kind])
    try:
        sam = model_cls.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"cannot load SAM {model!r}: {str(e).splitlines()[0]}\n{SAM_HINT}") from None
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
    def embed(self, sample_id: str, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(image embedding (SAM: [1, 256, 64, 64]; HQ-SAM: with its intermediate embeddings;
        SAM 2: its feature pyramid), resized input size (h, w)) of an RGB uint8 image."""
        key = (sample_id, str(self.device), image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest())
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        inputs = self.processor(images=image, return_tensors="pt")
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


_LOADED: dict[str, SharedSam] = {}


def shared_sam(model: str) -> SharedSam:
    key = model if model in TINY else str(Path(model).expanduser().resolve()) if looks_local(model) else model
    if key not in _LOADED:
        _LOADED[key] = SharedSam(model)
    return _LOADED[key]
