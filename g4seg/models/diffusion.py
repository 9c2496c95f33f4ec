"""Stable Diffusion parts for one-step regeneration: real checkpoints or tiny random ones.

`load_diffusion("tiny")` builds a few-MB model family from configs (seeded, so every
process gets the same weights) for tests and the offline demo. Anything else is a local
folder in diffusers layout or a hub id; SD 1.5 / 2.1 (epsilon or v-prediction), LCM
distilled UNets and SDXL (second text encoder, pooled embeddings, time ids) are told
apart from their configs; SD3 folders (a `transformer/`, flow matching) load through
diffusers' own SD3 pipeline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..errors import ConfigError
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
    text_encoder_3: nn.Module | None = None  # SD3's T5 (optional there)
    tokenizer_3: object | None = None
    _pipeline: object | None = field(default=None, repr=False)  # SD3 / Flux: built on first use

    @property
    def is_sd3(self) -> bool:
        """SD3 / SD3.5: an MMDiT transformer (joint attention) in the UNet's place, flow matching."""
        return type(self.unet).__name__ == "SD3Transformer2DModel"

    @property
    def is_flux(self) -> bool:
        """Flux.1: double- and single-stream MMDiT over packed latents, flow matching."""
        return type(self.unet).__name__ == "FluxTransformer2DModel"

    @property
    def is_flow(self) -> bool:
        return self.is_sd3 or self.is_flux

    def pipeline(self):
        """diffusers' SD3 or Flux pipeline over these parts, for its prompt encoding (SD3:
        CLIP-L, CLIP-G, T5 or zeros without it; Flux: CLIP's pooled vector, T5's sequence)
        and latent packing, built once."""
        if self._pipeline is None:
            from diffusers import FluxPipeline, StableDiffusion3Pipeline

            parts = dict(transformer=self.unet, scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                         tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2)  # fmt: skip
            if self.is_flux:
                self._pipeline = FluxPipeline(**parts)
            else:
                self._pipeline = StableDiffusion3Pipeline(**parts, text_encoder_3=self.text_encoder_3,
                                                          tokenizer_3=self.tokenizer_3)  # fmt: skip
        return self._pipeline

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




TINY = ("tiny", "tiny-v", "tiny-sdxl", "tiny-lcm", "tiny-sd3", "tiny-flux")
SD_REPO = "stabilityai/stable-diffusion-2-1-base"
CONTROLNET_REPO = "lllyasviel/control_v11p_sd15_seg"
SD3_REPO = "stabilityai/stable-diffusion-3-medium-diffusers"
FLUX_REPO = "black-forest-labs/FLUX.1-dev"


def load_diffusion(source: str, controlnet: str | None = None, config_key: str = "model") -> DiffusionModels:
    """Models from "tiny" (epsilon), "tiny-v" (v-prediction), "tiny-sdxl", "tiny-lcm", a local
    diffusers folder or a hub id (cache only when offline); one copy per (model, controlnet)
    in a process. Attention processors are swapped only for the duration of one call, so
    sharing is safe."""
    return hub.shared("diffusion", (str(source), controlnet), lambda: _load_diffusion(source, controlnet, config_key))


def _load_diffusion(source: str, controlnet: str | None, config_key: str) -> DiffusionModels:
    if source in TINY:
        from .tiny import tiny_diffusion, tiny_flux, tiny_sd3

        if controlnet not in (None, "tiny") and source in ("tiny", "tiny-v"):  # a ControlNet fine-tuned on the tiny UNet
            hub.require_all([(controlnet, "folder", "the ControlNet", hub.hub_command(CONTROLNET_REPO), "controlnet")])
            models = tiny_diffusion(v_prediction=source == "tiny-v")
            models.controlnet = _load_controlnet(controlnet, f"{config_key} controlnet")
            return models
        if controlnet not in (None, "tiny"):
            raise ConfigError(f"{source} takes controlnet 'tiny', none, or a ControlNet folder made for 'tiny', got {controlnet!r}")

        if source in ("tiny-sd3", "tiny-flux"):
            if controlnet is not None:
                raise ConfigError(f"{source} takes no ControlNet here (SD3 / Flux ControlNets are other architectures)")
            parts = tiny_sd3() if source == "tiny-sd3" else tiny_flux()
            return transformer_models(parts, source, random_weights=True)
        return tiny_diffusion(controlnet=controlnet == "tiny", sdxl=source == "tiny-sdxl", lcm=source == "tiny-lcm",
                              v_prediction=source == "tiny-v")  # fmt: skip
    hub.require_all([(source, "folder", "the diffusion model", hub.hub_command(SD_REPO), config_key),
                     (controlnet, "folder", "the ControlNet", hub.hub_command(CONTROLNET_REPO), "controlnet")])  # fmt: skip
    kind = _index_class(source)
    if kind in ("StableDiffusion3Pipeline", "FluxPipeline") or (Path(source) / "transformer").is_dir():
        if controlnet is not None:
            raise ConfigError(f"{source}: SD3 / Flux take no ControlNet here (their ControlNets are other architectures)")
        import diffusers

        kind = kind or "StableDiffusion3Pipeline"  # a transformer/ folder without an index: SD3's layout
        repo = FLUX_REPO if kind == "FluxPipeline" else SD3_REPO
        try:
            pipe = getattr(diffusers, kind).from_pretrained(source)
        except hub.load_errors() as e:
            raise hub.missing(source, f"cannot load {kind}: {hub.why(e)}", Path(repo).name,
                              hub.hub_command(repo), config_key) from None  # fmt: skip
        return transformer_models(pipe.components, source)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def load(cls, subfolder=None, where=source, repo=SD_REPO, key=config_key):
        try:
            kwargs = {"subfolder": subfolder} if subfolder else {}
            return cls.from_pretrained(where, **kwargs)
        except hub.load_errors() as e:
            part = f" (subfolder {subfolder})" if subfolder else ""
            raise hub.missing(where, f"cannot load {cls.__name__}{part}: {hub.why(e)}",
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
        models.controlnet = _load_controlnet(controlnet, f"{config_key} controlnet")
    return models


def _load_controlnet(source: str, key: str):
    from diffusers import ControlNetModel

    try:
        return ControlNetModel.from_pretrained(source)
    except hub.load_errors() as e:
        raise hub.missing(source, f"cannot load ControlNetModel: {hub.why(e)}", Path(CONTROLNET_REPO).name,
                          hub.hub_command(CONTROLNET_REPO), key) from None  # fmt: skip


def _index_class(source: str) -> str | None:
    """The pipeline class a diffusers folder's model_index.json names, if it has one."""
    import json

    index = Path(source) / "model_index.json"
    try:
        return json.loads(index.read_text()).get("_class_name") if index.is_file() else None
    except (OSError, ValueError):
        return None


def transformer_models(parts: dict, name: str, random_weights: bool = False) -> DiffusionModels:
    """SD3 or Flux parts by diffusers' pipeline names; the transformer stands where the UNet
    does. Default resolution: SD3's sample size x 8, Flux's native 1024 (tiny: 128)."""
    transformer = parts["transformer"]
    vae_scale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    size = getattr(transformer.config, "sample_size", None)
    resolution = int(size) * vae_scale if size else (128 if name.startswith("tiny") else 1024)
    return DiffusionModels(
        vae=parts["vae"], unet=transformer, text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        scheduler=parts["scheduler"], text_encoder_2=parts["text_encoder_2"], tokenizer_2=parts["tokenizer_2"],
        text_encoder_3=parts.get("text_encoder_3"), tokenizer_3=parts.get("tokenizer_3"), random_weights=random_weights,
        default_resolution=resolution, name=name,
    )  # fmt: skip
