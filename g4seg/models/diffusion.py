"""Stable Diffusion parts for one-step regeneration: real checkpoints or tiny random ones.

`load_diffusion("tiny")` builds a few-MB model family from configs (seeded, so every
process gets the same weights) for tests and the offline demo. Anything else is a local
folder in diffusers layout or a hub id; SD 1.5 / 2.1 (epsilon or v-prediction), LCM
distilled UNets and SDXL (second text encoder, pooled embeddings, time ids) are told
apart from their configs.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError

DOWNLOAD_HINT = (
    "Download it on a machine with internet access, e.g.\n"
    "  hf download {repo} --local-dir /models/{short}\n"
    "copy the folder here, and point the config at it ({key}: /models/{short})."
)


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


ATTENTION_SHARPNESS = 3.0


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


def tiny_models(
    seed: int = 0, controlnet: bool = False, sdxl: bool = False, lcm: bool = False, v_prediction: bool = False
) -> DiffusionModels:
    """SD-shaped models with random weights: VAE with 8x downsampling, a two-level UNet with
    cross-attention at both levels, a 2-layer CLIP text encoder, optionally a ControlNet."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32), sample_size=128,
        )  # fmt: skip
        text_cfg = dict(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        )  # fmt: skip
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
        unet_kwargs = dict(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
        )  # fmt: skip
        text_encoder_2 = None
        if sdxl:
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg, projection_dim=32))
            unet_kwargs.update(
                cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=32 + 6 * 8,
            )  # fmt: skip
        if lcm:  # LCM-distilled UNets take the guidance scale as an extra time embedding
            unet_kwargs["time_cond_proj_dim"] = 32
        unet = UNet2DConditionModel(**unet_kwargs)
        # Trained SD attention is peaked (score spreads of ~10 logits per query row); the
        # default init gives ~0.5, under which a modulation relative to each row's range
        # (DenseDiffusion's) is invisible. Sharper queries/keys make the tiny model a fair test.
        for name, module in unet.named_modules():
            if name.endswith(("attn1", "attn2")):
                module.to_q.weight.data.mul_(ATTENTION_SHARPNESS)
                module.to_k.weight.data.mul_(ATTENTION_SHARPNESS)
        cn = None
        if controlnet:
            cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
            # ControlNet's output convs start at zero (no effect until trained); random ones
            # make the conditioning path observable in tests and the demo.
            for module in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
                nn.init.normal_(module.weight, std=0.02)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction" if v_prediction else "epsilon", clip_sample=False,
    )  # fmt: skip
    tok = clip_tokenizer()
    return DiffusionModels(
        vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tok, scheduler=scheduler, controlnet=cn,
        text_encoder_2=text_encoder_2, tokenizer_2=tok if sdxl else None, random_weights=True,
        default_resolution=128, name="tiny-sdxl" if sdxl else "tiny-lcm" if lcm else "tiny-v" if v_prediction else "tiny",
    )  # fmt: skip


_LOADED: dict[tuple[str, str | None], DiffusionModels] = {}


def load_diffusion(source: str, controlnet: str | None = None, config_key: str = "model") -> DiffusionModels:
    """Models from "tiny" (epsilon), "tiny-v" (v-prediction), "tiny-sdxl", "tiny-lcm", a local
    diffusers folder or a hub id (cache only when offline).

    One copy per (model, controlnet) in a process: injectors naming the same checkpoint (a
    timestep sweep, EMI next to DenseDiffusion, ...) share its modules instead of each
    holding several GB. Nothing trains them, and attention processors are swapped only
    for the duration of one call, so sharing is safe.
    """
    key = (str(source), None if controlnet is None else str(controlnet))
    if key not in _LOADED:
        _LOADED[key] = _load_diffusion(source, controlnet, config_key)
    return _LOADED[key]


def _load_diffusion(source: str, controlnet: str | None, config_key: str) -> DiffusionModels:
    if source in TINY:
        if controlnet not in (None, "tiny"):
            raise ValueError(f"tiny models take controlnet 'tiny' or none, got {controlnet!r}")
        return tiny_models(controlnet=controlnet == "tiny", sdxl=source == "tiny-sdxl", lcm=source == "tiny-lcm",
                           v_prediction=source == "tiny-v")  # fmt: skip
    wanted = ((source, "stabilityai/stable-diffusion-2-1-base", config_key),
              (controlnet, "lllyasviel/control_v11p_sd15_seg", "controlnet"))  # fmt: skip
    missing = [
        f"{where}: model folder does not exist.\n"
        + DOWNLOAD_HINT.format(repo=repo, short=Path(repo).name, key=key)
        for where, repo, key in wanted
        if where and looks_local(where) and not Path(where).expanduser().is_dir()
    ]
    if missing:
        raise ModelNotFoundError("\n".join(missing))
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def load(cls, subfolder=None, where=source, repo="stabilityai/stable-diffusion-2-1-base", key=config_key):
        try:
            kwargs = {"subfolder": subfolder} if subfolder else {}
            return cls.from_pretrained(where, **kwargs)
        except (OSError, ValueError) as e:
            short = Path(str(repo)).name
            raise ModelNotFoundError(
                f"cannot load {cls.__name__} from {where!r}{f' (subfolder {subfolder})' if subfolder else ''}: "
                f"{str(e).splitlines()[0]}\n" + DOWNLOAD_HINT.format(repo=repo, short=short, key=key)
            ) from None

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
        models.controlnet = load(
            ControlNetModel, None, controlnet, "lllyasviel/control_v11p_sd15_seg", f"{config_key} controlnet"
        )
    return models


def looks_local(source: str) -> bool:
    """Paths are told from hub ids ("org/name") by their start, so a typo fails fast offline."""
    return source.startswith(("/", ".", "~")) or os.sep + os.sep in source or Path(source).exists()
