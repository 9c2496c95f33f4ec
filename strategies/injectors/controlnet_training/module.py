"""Fine-tuning the segmentation ControlNet on a dataset's ground truth (G4Seg's Table VIII uses
lllyasviel's seg ControlNet "fine-tuned on the corresponding training set").

The loss is diffusers' examples/controlnet/train_controlnet.py: VAE latents (sampled, times
the scaling factor), a uniform timestep, the scheduler's `add_noise`, the frozen UNet with
the ControlNet's residuals, MSE to the noise (epsilon models) or to the scheduler's velocity
(v-prediction models). Only the ControlNet trains; VAE, UNet and text encoder stay frozen
and in eval mode. The VAE's sampling noise, the diffusion noise and the timestep of each
example come from (seed, example key, step), so a global batch gives the same gradient on
one process or on several; validation uses one fixed draw per example, so its loss is
comparable from step to step.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from g4seg.errors import ConfigError
from g4seg.files import atomic_write_json
from g4seg.models.diffusion import load_diffusion
from g4seg.seeding import stable_seed

from ..controlnet import FINETUNE_INFO
from ..jobs import clip_token_ids

ARCHITECTURE_KEYS = ("in_channels", "block_out_channels", "down_block_types", "layers_per_block", "cross_attention_dim",
                     "attention_head_dim")  # fmt: skip
VALIDATION_DRAW = -1


class ControlNetFineTuning(L.LightningModule):
    """Args:
    model: the base diffusion model ("tiny", "tiny-v", or an SD 1.x / 2.x folder or hub id).
    controlnet: where training starts: null (a new ControlNet from the UNet's weights, zero
        output convolutions, `ControlNetModel.from_unet`), "tiny" (with model "tiny"), or a
        ControlNet folder / hub id (lllyasviel/control_v11p_sd15_seg, as the paper).
    learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon: AdamW (diffusers'
        train_controlnet.py defaults: 5e-6, 0.9, 0.999, 1e-2, 1e-8).
    gradient_checkpointing: recompute the ControlNet's and UNet's activations in backward.
    seed: the noise and timesteps of each example come from (seed, example, step).
    """

    def __init__(self, model: str = "tiny", controlnet: str | None = None, learning_rate: float = 5e-6,
                 adam_beta1: float = 0.9, adam_beta2: float = 0.999, weight_decay: float = 1e-2,
                 adam_epsilon: float = 1e-8, gradient_checkpointing: bool = False, seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        models = load_diffusion(model)
        if models.is_sdxl or models.is_flow:
            raise ConfigError(f"{model}: ControlNet fine-tuning supports SD 1.x / 2.x base models (as ControlNetInjection)")
        self.models_info = models
        self.vae, self.unet, self.text_encoder = models.vae, models.unet, models.text_encoder
        for frozen in (self.vae, self.unet, self.text_encoder):
            frozen.eval().requires_grad_(False)
        self.controlnet = self.initial_controlnet(model, controlnet).train().requires_grad_(True)
        if gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
            self.unet.enable_gradient_checkpointing()
        self.strict_loading = False  # checkpoints hold the ControlNet only (see on_save_checkpoint)

    def initial_controlnet(self, model: str, source: str | None):
        from diffusers import ControlNetModel

        if source is None:
            return ControlNetModel.from_unet(self.unet)
        if source == "tiny":
            if model not in ("tiny", "tiny-v"):
                raise ConfigError(f"controlnet 'tiny' goes with model 'tiny', not {model!r}")
            return copy.deepcopy(load_diffusion(model, "tiny").controlnet)  # the shared copy stays untouched
        net = load_diffusion(model, source).controlnet
        unet = self.unet.config
        for key in ARCHITECTURE_KEYS:
            theirs, ours = net.config.get(key), unet.get(key)
            if theirs is not None and ours is not None and list(_as_list(theirs)) != list(_as_list(ours)):
                raise ConfigError(f"{source}: a ControlNet of another architecture ({key} {theirs} vs the UNet's {ours} "
                                  f"in {model}); start from one made for this model, or from the UNet (controlnet: null)")  # fmt: skip
        return copy.deepcopy(net)

    def check_resolution(self, resolution: int) -> None:
        """Training images must pass the VAE and every UNet downsampling whole."""
        multiple = self.models_info.vae_scale * 2 ** (len(self.unet.config.down_block_types) - 1)
        if resolution % multiple:
            raise ConfigError(f"data.resolution {resolution} must be a multiple of {multiple} for {self.hparams.model} "
                              "(the VAE's factor times the UNet's downsampling)")  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.vae, self.unet, self.text_encoder):
            frozen.eval()
        return self

    def diffusion_loss(self, batch: dict, draw: int) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        scheduler = self.models_info.scheduler
        gens = [torch.Generator().manual_seed(stable_seed(self.hparams.seed, key, draw) % 2**63) for key in batch["key"]]
        pixels, cond = batch["pixel_values"], batch["conditioning"]
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(generator=gens) * self.vae.config.scaling_factor
            noise = randn_tensor(latents.shape, generator=gens, device=latents.device, dtype=latents.dtype)
            t = torch.tensor([int(torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=g)) for g in gens],
                             device=latents.device)  # fmt: skip
            noisy = scheduler.add_noise(latents, noise, t)
            ids = clip_token_ids(self.models_info.tokenizer, batch["prompt"], latents.device)
            text = self.text_encoder(ids, return_dict=False)[0]
        down, mid = self.controlnet(noisy, t, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
        pred = self.unet(noisy, t, encoder_hidden_states=text, down_block_additional_residuals=list(down),
                         mid_block_additional_residual=mid, return_dict=False)[0]  # fmt: skip
        kind = scheduler.config.prediction_type
        target = noise if kind == "epsilon" else scheduler.get_velocity(latents, noise, t) if kind == "v_prediction" else None
        if target is None:
            raise ConfigError(f"{self.hparams.model}: prediction type {kind!r} is not trained here (epsilon, v_prediction)")
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch, self.global_step)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self.diffusion_loss(batch, VALIDATION_DRAW)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["key"]))

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.AdamW(self.controlnet.parameters(), lr=h.learning_rate, betas=(h.adam_beta1, h.adam_beta2),
                                 weight_decay=h.weight_decay, eps=h.adam_epsilon)  # fmt: skip

    RESUMABLE_CHANGES = ("gradient_checkpointing",)  # memory only: the same numbers either way

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resume with other model settings would mix two trainings in one ControlNet: refused."""
        refuse_changes("model", checkpoint.get("hyper_parameters", {}), dict(self.hparams), self.RESUMABLE_CHANGES)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The frozen models are re-read from their source on resume: only the ControlNet is kept."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("controlnet.")}

    def save_controlnet(self, folder: Path, info: dict) -> Path:
        """A diffusers ControlNet folder (+ FINETUNE_INFO: what trained it), written aside and moved
        into place, so a folder at that path is always whole."""
        folder = Path(folder)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.controlnet.save_pretrained(partial)
        atomic_write_json(partial / FINETUNE_INFO, {"base_model": self.hparams.model,
                                                "initial_controlnet": self.hparams.controlnet or "from the UNet",
                                                "settings": dict(self.hparams), "steps": int(self.global_step), **info})  # fmt: skip
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
        return folder


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def refuse_changes(part: str, saved: dict, now: dict, allowed: tuple[str, ...] = ()) -> None:
    """One line naming every setting of `part` that differs from the checkpoint's."""
    changed = [f"{part}.{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
               if k not in allowed and saved.get(k) != now.get(k)]  # fmt: skip
    if changed:
        raise ConfigError(f"the checkpoint was trained with other settings ({'; '.join(changed)}); resume with the "
                          "same settings, or use another --output_dir to start anew")  # fmt: skip
