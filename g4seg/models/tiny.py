"""Every random test model in one place: small models built from configs, seeded, the same
in every process, a few MB each. Tests and the offline demo run the real code paths on
them; the loaders hand them out under the names "tiny", "tiny-v", "tiny-sdxl", ... .

The only tuning for tests lives here (sharper attention in the tiny UNet, random
ControlNet output convolutions): the production loaders never touch real weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .diffusion import DiffusionModels, clip_tokenizer

ATTENTION_SHARPNESS = 3.0


def tiny_vae(latent_channels: int = 4, **extra) -> nn.Module:
    """SD's VAE layout (8x down) at a few hundred k parameters; `extra`: a family's own keys."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32), sample_size=128, **extra,
    )  # fmt: skip


def tiny_diffusion(
    seed: int = 0, controlnet: bool = False, sdxl: bool = False, lcm: bool = False, v_prediction: bool = False
) -> DiffusionModels:
    """SD-shaped models with random weights: VAE with 8x downsampling, a two-level UNet with
    cross-attention at both levels, a 2-layer CLIP text encoder, optionally a ControlNet."""
    from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = tiny_vae()
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


def tiny_clip(seed: int = 0) -> nn.Module:
    """A whole open_clip CLIP (vision and text towers) with random weights, a few MB."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vision = CLIPVisionCfg(layers=2, width=32, head_width=8, mlp_ratio=2.0, patch_size=8, image_size=64)
        text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=4, layers=2)
        return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


SAM_CLASSES = {"sam": "SamModel", "sam_hq": "SamHQModel", "sam2": "Sam2Model"}


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
        return getattr(tf, SAM_CLASSES[kind])(config)


def tiny_cascadepsp(seed: int = 0) -> nn.Module:
    from .cascadepsp import RefinementNetwork

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RefinementNetwork(base=8, layers=(1, 1, 1, 1))


def tiny_segrefiner(seed: int = 0) -> nn.Module:
    """SegRefiner's U-Net at 32 channels, 4 levels, attention at the deepest (~0.9 M parameters)."""
    from .segrefiner import TINY_CONFIG, DenoiseUNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DenoiseUNet(TINY_CONFIG)


def tiny_segmenter(kind: str, labels: list[str], seed: int = 0):
    """A random SegFormer (~30 k parameters) or Mask2Former with a small Swin (~1.2 M), with
    `labels` as its classes, and its image processor at 128 px; built offline from configs."""
    import transformers as tf

    names = {i: n for i, n in enumerate(labels)}
    ids = {n: i for i, n in names.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "tiny-segformer":
            config = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32],
                                        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                                        decoder_hidden_size=32, num_labels=len(labels), id2label=names, label2id=ids)  # fmt: skip
            return (tf.SegformerForSemanticSegmentation(config).eval(),
                    tf.SegformerImageProcessor(size={"height": 128, "width": 128}))  # fmt: skip
        swin = tf.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                             out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
        config = tf.Mask2FormerConfig(num_labels=len(labels), id2label=names, label2id=ids, hidden_dim=32, num_queries=8,
                                      encoder_feedforward_dim=64, dim_feedforward=64, decoder_layers=2, mask_feature_size=32,
                                      encoder_layers=1, num_attention_heads=2, backbone_config=swin.to_dict())  # fmt: skip
        return (tf.Mask2FormerForUniversalSegmentation(config).eval(),
                tf.Mask2FormerImageProcessor(size={"shortest_edge": 128, "longest_edge": 256}))  # fmt: skip


def tiny_sd3(seed: int = 0) -> dict:
    """SD3-shaped random components under diffusers' pipeline names (`StableDiffusion3Pipeline
    (**components)` takes them): a 2-block MMDiT (patch 2, QK-norm), a 16-channel VAE with
    SD3's shift factor, two CLIP text encoders with projections, a 1-layer T5 with the
    word-level tokenizer stand-in, the flow-matching scheduler with SD3's shift 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32,
            pos_embed_max_size=16, qk_norm="rms_norm",
        )  # fmt: skip
        vae = tiny_vae(latent_channels=16, shift_factor=0.0609, scaling_factor=1.5305, use_quant_conv=False,
                       use_post_quant_conv=False)  # SD3's
        text_cfg = dict(
            vocab_size=49408, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=16,
        )  # fmt: skip
        encoders = [CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)) for _ in range(2)]
        t5_tokenizer = tiny_t5_tokenizer()
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2))
    tok = clip_tokenizer()
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": encoders[0].eval(), "tokenizer": tok,
            "text_encoder_2": encoders[1].eval(), "tokenizer_2": tok, "text_encoder_3": t5.eval(), "tokenizer_3": t5_tokenizer,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}  # fmt: skip


def tiny_t5_tokenizer():
    """A word-level stand-in for T5's tokenizer (no download): the words of every class
    preset and of the prompt, lower-cased, "</s>" appended as T5 does; other words <unk>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from ..classes import PRESETS

    words = {w for names in PRESETS.values() for n in names for w in n.lower().split()} | {"a", "photo", "of"}
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)  # fmt: skip


def tiny_flux(seed: int = 0) -> dict:
    """Flux.1-dev-shaped random components under diffusers' pipeline names: a 1 + 1 block
    MMDiT (double- and single-stream, RoPE, guidance embedding), a VAE with Flux's shift and
    scale, CLIP for the pooled vector, a 1-layer T5 for the sequence, the dynamically
    shifted flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5_tokenizer = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
            axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
        vae = tiny_vae(shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)  # Flux's
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=49406,
                                            eos_token_id=49407, pad_token_id=49407))  # fmt: skip
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)  # fmt: skip
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": clip.eval(), "tokenizer": clip_tokenizer(),
            "text_encoder_2": t5.eval(), "tokenizer_2": t5_tokenizer, "scheduler": scheduler}  # fmt: skip
