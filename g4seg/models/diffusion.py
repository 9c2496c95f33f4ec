"""Stable Diffusion parts for one-step regeneration: real checkpoints or tiny random ones.

`load_diffusion("tiny")` builds a few-MB model family from configs (seeded, so every
process gets the same weights) for tests and the offline demo. Anything else is a local
folder in diffusers layout or a hub id; SD 1.5 / 2.1 (epsilon or v-prediction), LCM
distilled UNets and SDXL (second text encoder, pooled embeddings, time ids) are told
apart from their configs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from . import hub



@dataclass
class DiffusionModels:
    vae: nn.Module
    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    scheduler: object  # anything with alphas_cumprod and config.prediction_type
    controlnet: nn.Module | None = None
    text_encoder_2: nn.Module | None = None  # SDXL
    tokenizer_2: object | None = None
    random_weights: bool = False
    default_resolution: int = 512
    name: str = ""

    @property
    def is_sdxl(self) -> bool:
        return getattr(self.unet.config, "addition_embed_type", None) == "text_time"

    @property
    def is_lcm(self) -> bool:
        return getattr(self.unet.config, "time_cond_proj_dim", None) is not None

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@functools.cache
def clip_tokenizer():
    """The CLIP BPE tokenizer (as used by SD) from open_clip's bundled vocabulary: no download."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    t = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in t.encoder.items()}
    merges = [tuple(m) for m, _ in sorted(t.bpe_ranks.items(), key=lambda kv: kv[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)




TINY = ("tiny", "tiny-v", "tiny-sdxl", "tiny-lcm")
SD_REPO = "stabilityai/stable-diffusion-2-1-base"
CONTROLNET_REPO = "lllyasviel/control_v11p_sd15_seg"


def load_diffusion(source: str, controlnet: str | None = None, config_key: str = "model") -> DiffusionModels:
    """Models from "tiny" (epsilon), "tiny-v" (v-prediction), "tiny-sdxl", "tiny-lcm", a local
    diffusers folder or a hub id (cache only when offline); one copy per (model, controlnet)
    in a process. Attention processors are swapped only for the duration of one call, so
    sharing is safe."""
    return hub.shared("diffusion", (str(source), controlnet), lambda: _load_diffusion(source, controlnet, config_key))


def _load_diffusion(source: str, controlnet: str | None, config_key: str) -> DiffusionModels:
    if source in TINY:
        if controlnet not in (None, "tiny"):
            raise ValueError(f"tiny models take controlnet 'tiny' or none, got {controlnet!r}")
        from .tiny import tiny_diffusion

        return tiny_diffusion(controlnet=controlnet == "tiny", sdxl=source == "tiny-sdxl", lcm=source == "tiny-lcm",
                              v_prediction=source == "tiny-v")  # fmt: skip
    hub.require_all([(source, "folder", "the diffusion model", hub.hub_command(SD_REPO), config_key),
                     (controlnet, "folder", "the ControlNet", hub.hub_command(CONTROLNET_REPO), "controlnet")])  # fmt: skip
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def load(cls, subfolder=None, where=source, repo=SD_REPO, key=config_key):
        try:
            kwargs = {"subfolder": subfolder} if subfolder else {}
            return cls.from_pretrained(where, **kwargs)
        except (OSError, ValueError) as e:
            part = f" (subfolder {subfolder})" if subfolder else ""
            raise hub.missing(where, f"cannot load {cls.__name__}{part}: {str(e).splitlines()[0]}",
                              Path(repo).name, hub.hub_command(repo), key) from None  # fmt: skip

    unet = load(UNet2DConditionModel, "unet")
    models = DiffusionModels(
        vae=load(AutoencoderKL, "vae"),
        unet=unet,
        text_encoder=load(CLIPTextModel, "text_encoder"),
        tokenizer=load(CLIPTokenizer, "tokenizer"),
        scheduler=load(DDPMScheduler, "scheduler"),
        name=source,
    )
    if models.is_sdxl:
        models.text_encoder_2 = load(CLIPTextModelWithProjection, "text_encoder_2")
        models.tokenizer_2 = load(CLIPTokenizer, "tokenizer_2")
    models.default_resolution = int(unet.config.sample_size) * models.vae_scale
    if controlnet is not None:
        models.controlnet = load(ControlNetModel, None, controlnet, CONTROLNET_REPO, f"{config_key} controlnet")
    return models
