"""One-step Stable Diffusion regeneration shared by every injector (G4Seg, Sec. III-B).

image -> VAE latent x0 -> x_t at t_s (the scheduler's `add_noise`) -> one UNet call with
"A photo of {class}" -> x0_hat (the scheduler's `step(...).pred_original_sample`, which
reads epsilon, v or sample predictions as the model's config says) -> VAE decode -> back
to the image's size.

Options: classifier-free guidance (`guidance_scale`; the layout injection acts on the
conditional branch only, as DenseDiffusion does), and a deterministic start instead of
random noise (`inversion`: DDIM inversion, or Null-text inversion; see `inversion.py`).

All (sample, class) jobs of a batch go through the VAE encoder once per image and through
the UNet together. Noise comes from a CPU generator seeded with (seed, sample id, class),
so an image does not depend on batch size, device count or order. Images are resized to
`resolution` x `resolution` (aspect not kept: the layout is stretched, and the mask with
it, so pixel correspondence is exact after resizing back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.profiler import record_function

from g4seg.classes import check_prompt, prompt_name
from g4seg.errors import ConfigError
from g4seg.finite import check_finite
from g4seg.interfaces import Injector
from g4seg.models.diffusion import SD_REPO, load_diffusion
from g4seg.models.hub import hub_command
from g4seg.precision import autocast, check_precision
from g4seg.types import Generated, Sample

from .flow_matching import (FLUX_T5_LENGTH, NOISE_LEVELS, SD3_T5_LENGTH, flow_prompts, noised, step_sigma, velocity,
                            x0_from_velocity)  # fmt: skip
from .inversion import ddim_invert, inversion_timesteps, optimise_null_text
from .jobs import Jobs, class_token_mask, clip_token_ids, noise_for

INVERSIONS = ("none", "ddim", "null_text")
NULL_TEXT_GUIDANCE = 7.5  # Mokady et al.'s guidance scale, the default when null_text is chosen


class DiffusionInjector(Injector):
    """Base of the diffusion injectors; subclasses add the mask through `injection` and
    `unet_inputs`.

    Args:
        model: "tiny" (random weights, offline; "tiny-v" v-prediction, "tiny-sdxl", "tiny-lcm"), a local
            diffusers folder or a hub id.
        resolution: generation size; default the model's (512 for SD, 128 for tiny).
        timestep: t_s of the one-step regeneration (of 1000).
        prompt: template with {} for the class name.
        seed: combined with sample id and class for the noise.
        max_batch: most jobs per UNet call (memory); None = the whole batch at once.
        guidance: guidance embedding value: LCM UNets (default 8) and Flux-dev (default 3.5).
        guidance_scale: classifier-free guidance w (eps_u + w (eps_c - eps_u), prompt ""
            unconditional); 1 = off. Default 1, or 7.5 with `inversion: null_text`.
        inversion: "none" (x_t from seeded random noise), "ddim" (deterministic DDIM
            inversion of the image latent up to t_s) or "null_text" (DDIM inversion, then
            the unconditional embedding fitted so the guided step reproduces the image).
        inversion_steps: DDIM inversion steps from 0 to t_s (must divide t_s).
        null_text_iterations, null_text_lr, null_text_epsilon: Mokady et al.'s inner loop
            (at most 10 Adam updates, lr 1e-2, stop below a loss of 1e-5).
        precision: "auto" (fp16 autocast on a GPU, fp32 on the CPU), "fp32", "fp16" or "bf16".
        noise: SD3 / Flux only: "paper" (t_s / 1000 through the model's shift, as diffusers'
            img2img) or "matched_snr" (SD's signal-to-noise ratio at t_s; flow_matching.py).
        vae_latent: "mean" (the VAE posterior's mean) or "sample" (a draw from it, seeded per
            image like the noise, as diffusers' img2img pipelines encode).
    """

    controlnet_source: str | None = None
    FILES_NEEDED = {"model": f"the diffusion model: {hub_command(SD_REPO)} (or the model the config names)"}

    def __init__(
        self,
        model: str = "tiny",
        resolution: int | None = None,
        timestep: int = 400,
        prompt: str = "A photo of {}",
        seed: int = 0,
        max_batch: int | None = None,
        guidance: float | None = None,
        guidance_scale: float | None = None,
        inversion: str = "none",
        inversion_steps: int = 10,
        null_text_iterations: int = 10,
        null_text_lr: float = 1e-2,
        null_text_epsilon: float = 1e-5,
        precision: str = "auto",
        noise: str = "paper",
        vae_latent: str = "mean",
    ) -> None:
        super().__init__()
        self.precision = check_precision(type(self).__name__, precision)
        models = load_diffusion(model, self.controlnet_source)
        self.models_info = models
        self.random_weights = models.random_weights
        # registered as children so Lightning moves them with the LightningModule
        self.vae, self.unet, self.text_encoder = models.vae, models.unet, models.text_encoder
        self.text_encoder_2, self.text_encoder_3, self.controlnet = models.text_encoder_2, models.text_encoder_3, models.controlnet
        for m in (self.vae, self.unet, self.text_encoder, self.text_encoder_2, self.text_encoder_3, self.controlnet):
            if m is not None:
                m.eval().requires_grad_(False)
        self.resolution = resolution or models.default_resolution
        if self.resolution % (models.vae_scale * 2) != 0:
            raise ConfigError(f"resolution {self.resolution} must be a multiple of {models.vae_scale * 2}")
        n = models.scheduler.config.num_train_timesteps
        if not 0 <= timestep < n:
            raise ConfigError(f"timestep must lie in [0, {n}), got {timestep}")
        if guidance is None:  # LCM's w embedding 8 (its scheduler's example), Flux-dev's guidance 3.5
            guidance = 3.5 if models.is_flux else 8.0
        self.timestep, self.seed, self.max_batch, self.guidance = timestep, seed, max_batch, guidance
        self.prompt = check_prompt(prompt)
        if noise not in NOISE_LEVELS or vae_latent not in ("mean", "sample"):
            raise ConfigError(f"noise must be one of {NOISE_LEVELS} and vae_latent mean or sample, got {noise!r}, {vae_latent!r}")
        if noise != "paper" and not models.is_flow:
            raise ConfigError(f"noise: {noise} is for the flow-matching models (SD3, Flux); SD's DDPM step is its reference")
        self.vae_latent = vae_latent
        if models.is_flow:  # flow matching: sigma instead of alpha_bar, the velocity as output
            self.sigma, self.prediction_type = step_sigma(models, timestep, self.resolution, noise), "flow"
        else:
            self.alpha_bar = float(models.scheduler.alphas_cumprod[timestep])
            self.prediction_type = models.scheduler.config.prediction_type
        if inversion not in INVERSIONS:
            raise ConfigError(f"inversion must be one of {INVERSIONS}, got {inversion!r}")
        if models.is_flow and inversion != "none":
            raise ConfigError(f"inversion {inversion} is DDIM's; SD3 / Flux (flow matching) start from noise here: set inversion: none")
        if guidance_scale is None:
            guidance_scale = NULL_TEXT_GUIDANCE if inversion == "null_text" else 1.0
        if inversion == "null_text" and guidance_scale == 1.0:
            raise ConfigError(
                "inversion null_text fits the unconditional embedding, which acts only with guidance_scale != 1 "
                f"(Mokady et al. use {NULL_TEXT_GUIDANCE}); set guidance_scale"
            )
        if models.is_flux and guidance_scale != 1.0:
            raise ConfigError("Flux takes its guidance as an embedding (`guidance`, Flux-dev 3.5), not guidance_scale")
        self.guidance_scale, self.inversion = float(guidance_scale), inversion
        self.inversion_timesteps = inversion_timesteps(timestep, inversion_steps) if inversion != "none" else []
        self.null_text = (null_text_iterations, null_text_lr, null_text_epsilon)

    def resolved(self) -> dict:
        """Defaults that depend on the model or on other keys, as they ran."""
        noise = {"sigma": self.sigma} if self.models_info.is_flow else {"alpha_bar": self.alpha_bar}
        return {**self.settings, "resolution": self.resolution, "guidance_scale": self.guidance_scale,
                "guidance": self.guidance, **noise}  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    # -- hooks for subclasses -------------------------------------------------------------
    def injection(self, jobs: Jobs, active: torch.Tensor | None = None):
        """Context active during the UNet call (attention processors, ...); `active` [B]
        says which batch rows are injected (the conditional ones under guidance; None = all)."""
        return contextlib.nullcontext()

    def unet_inputs(self, jobs: Jobs, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> dict:
        """Extra keyword arguments of the UNet call (ControlNet residuals, ...)."""
        return {}

    # -- the pipeline ---------------------------------------------------------------------
    def make_jobs(self, samples: Sequence[Sample]) -> Jobs:
        r = self.resolution
        parts = self.prompt_tokenizers()
        length = sum(n for _, n in parts)
        index, ids, classes, masks, tokens, prompts, names = [], [], [], [], [], [], []
        for i, sample in enumerate(samples):
            labels = sample.coarse.labels().numpy().astype(np.uint8)
            for _, class_id in sample.coarse.foreground():
                name = prompt_name(sample.class_names[class_id])
                prompt = self.prompt.format(name)
                mask = cv2.resize((labels == class_id).astype(np.uint8), (r, r), interpolation=cv2.INTER_NEAREST)
                index.append(i), ids.append(sample.id), classes.append(class_id), prompts.append(prompt)
                names.append(sample.class_names[class_id])
                masks.append(torch.from_numpy(mask.astype(np.float32)))
                tokens.append(torch.cat([class_token_mask(tok, prompt, name, n) for tok, n in parts]))
        empty = torch.zeros(0, r, r)
        return Jobs(index, ids, classes, torch.stack(masks) if masks else empty,
                    torch.stack(tokens) if tokens else torch.zeros(0, length, dtype=torch.bool), prompts, names)  # fmt: skip

    def prompt_tokenizers(self) -> list[tuple]:
        """(tokenizer, length) of each part of the text sequence, in order: CLIP's 77; SD3
        with T5: CLIP's 77 then T5's 256; Flux: T5's 512 alone."""
        models = self.models_info
        if models.is_flux:
            return [(models.tokenizer_2, FLUX_T5_LENGTH)]
        clip = [(models.tokenizer, models.tokenizer.model_max_length)]
        return clip + [(models.tokenizer_3, SD3_T5_LENGTH)] if models.is_sd3 and models.tokenizer_3 is not None else clip

    def encode_images(self, samples: Sequence[Sample]) -> torch.Tensor:
        r = self.resolution
        batch = np.stack([cv2.resize(s.image.numpy(), (r, r), interpolation=cv2.INTER_AREA) for s in samples])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        latents = posterior.mean
        if self.vae_latent == "sample":  # class id -1: a draw of its own, apart from the classes' noise
            draws = [noise_for(s.id, -1, self.seed, tuple(latents.shape[1:])) for s in samples]
            latents = latents + posterior.std * torch.stack(draws).to(latents.device, latents.dtype)
        return (latents - self.latent_shift) * self.vae.config.scaling_factor

    @property
    def latent_shift(self) -> float:
        """SD3's VAE centres its latents (`shift_factor`); SD's has none."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, dict]:
        """Text embeddings (and SDXL's pooled embeddings and time ids) of each job's prompt."""
        unique = list(dict.fromkeys(prompts))
        if self.models_info.is_flow:
            emb, extra = flow_prompts(self.models_info, unique, self.device)
        else:
            emb, extra = self.clip_prompts(unique)
        where = torch.tensor([unique.index(p) for p in prompts], device=emb.device)
        return emb[where], {k: v[where] for k, v in extra.items()}

    def clip_prompts(self, unique: list[str]) -> tuple[torch.Tensor, dict]:
        """SD's and SDXL's text embeddings (SDXL: with pooled embeddings and time ids) of each prompt."""
        ids = clip_token_ids(self.models_info.tokenizer, unique, self.device)
        extra = {}
        if self.models_info.is_sdxl:
            out1 = self.text_encoder(ids, output_hidden_states=True)
            out2 = self.text_encoder_2(clip_token_ids(self.models_info.tokenizer_2, unique, self.device),
                                       output_hidden_states=True)  # fmt: skip
            emb = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
            r = float(self.resolution)
            time_ids = torch.tensor([[r, r, 0.0, 0.0, r, r]], device=self.device).expand(len(unique), 6)
            extra = {"text_embeds": out2.text_embeds, "time_ids": time_ids}
        else:
            emb = self.text_encoder(ids)[0]
        return emb, extra

    def lcm_condition(self, n: int) -> dict:
        """LCM UNets take the guidance scale as an embedding (`timestep_cond`), made by its pipeline's helper."""
        if not self.models_info.is_lcm:
            return {}
        from diffusers import LatentConsistencyModelPipeline

        w = torch.full((n,), self.guidance - 1.0)
        emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, self.unet.config.time_cond_proj_dim)
        return {"timestep_cond": emb.to(self.device)}

    @torch.no_grad()
    def generate(self, samples: Sequence[Sample]) -> list[Generated]:
        jobs = self.make_jobs(samples)
        results = {s.id: Generated(s.id, [], torch.zeros(0, *s.size, 3, dtype=torch.uint8)) for s in samples}
        if not len(jobs):
            return list(results.values())
        with self.autocast():
            with record_function("g4seg.vae_encode"):
                x0 = self.encode_images(samples)[jobs.sample_index].float()
            with record_function("g4seg.text_encode"):
                text, added = self.encode_prompts(jobs.prompts)
            step = self.max_batch or len(jobs)
            parts = [slice(start, start + step) for start in range(0, len(jobs), step)]
            with record_function("g4seg.unet"):
                x0_hat = torch.cat([self.regenerate(jobs.subset(p), x0[p], text[p], {k: v[p] for k, v in added.items()})
                                    for p in parts])  # fmt: skip
            with record_function("g4seg.vae_decode"):
                decoded = self.vae.decode(x0_hat.to(self.vae.dtype) / self.vae.config.scaling_factor + self.latent_shift).sample
            check_finite(decoded, self, [samples[i].id for i in jobs.sample_index], "images")
        with record_function("g4seg.images_to_host"):
            images = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        per_sample: dict[str, list] = {s.id: [] for s in samples}
        for img, i, c in zip(images, jobs.sample_index, jobs.class_ids):
            h, w = samples[i].size
            per_sample[samples[i].id].append((c, cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)))
        for sid, items in per_sample.items():
            if items:
                results[sid].class_ids = [c for c, _ in items]
                results[sid].images = torch.from_numpy(np.stack([im for _, im in items]))
        return list(results.values())

    def autocast(self):
        """The UNet, ControlNet, text encoder and VAE under autocast: "auto" is fp16 on a GPU
        and fp32 on the CPU; "bf16" also on the CPU (measured against fp32 in docs/benchmarks.md)."""
        return autocast(self.precision, self.device)

    def regenerate(self, jobs: Jobs, x0: torch.Tensor, text: torch.Tensor, added: dict, inject: bool = True) -> torch.Tensor:
        """x0_hat of one UNet step from t_s (with guidance: one guided step)."""
        x_t = self.start_latents(jobs, x0, text, added)
        uncond = self.unconditional(jobs, x_t, x0, text, added)
        out = self.guided_output(jobs, x_t, text, added, uncond, inject)
        return self.x0_hat(out, x_t)

    def x0_hat(self, out: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """The scheduler's clean-latent estimate from the model output at t_s. Its step also
        draws the noise of a next step, which is not used: a fixed generator keeps the
        global random state untouched."""
        if self.models_info.is_flow:
            return x0_from_velocity(x_t, out, self.sigma)
        generator = torch.Generator(x_t.device).manual_seed(0)
        scheduler = self.models_info.scheduler
        return scheduler.step(out, self.timestep, x_t, generator=generator).pred_original_sample

    def start_latents(self, jobs: Jobs, x0: torch.Tensor, text: torch.Tensor, added: dict) -> torch.Tensor:
        if self.inversion == "none":
            noise = torch.stack([noise_for(sid, c, self.seed, tuple(x0.shape[1:]))
                                 for sid, c in zip(jobs.sample_ids, jobs.class_ids)]).to(x0.device)  # fmt: skip
            if self.models_info.is_flow:
                return noised(x0, noise, self.sigma)
            t = torch.full((len(x0),), self.timestep, dtype=torch.long, device=x0.device)
            return self.models_info.scheduler.add_noise(x0, noise, t)
        return ddim_invert(lambda x, t: self.model_output(jobs, x, t, text, added, inject=False), x0,
                           self.inversion_timesteps, self.models_info.scheduler.alphas_cumprod, self.prediction_type)  # fmt: skip

    def unconditional(self, jobs, x_t, x0, text, added) -> tuple[torch.Tensor, dict] | None:
        """The unconditional branch's text (and SDXL extras): "" or Null-text's fit; None without guidance."""
        if self.guidance_scale == 1.0:
            return None
        null, null_added = self.encode_prompts([""] * len(jobs))
        if self.inversion == "null_text":
            iterations, lr, epsilon = self.null_text
            # Trainer.predict runs under inference mode, whose tensors autograd refuses: fit on copies
            with torch.inference_mode(False):
                x_t, x0, text, null = (t.clone() for t in (x_t, x0, text, null))
                added, null_added = ({k: v.clone() for k, v in d.items()} for d in (added, null_added))

                def guided_x0(embedding):
                    out = self.guided_output(jobs, x_t, text, added, (embedding, null_added), inject=False)
                    return self.x0_hat(out, x_t)

                null, _ = optimise_null_text(guided_x0, x0, null, iterations, lr, epsilon)
        return null, null_added

    def guided_output(self, jobs, x_t, text, added, uncond, inject: bool) -> torch.Tensor:
        if uncond is None:
            return self.model_output(jobs, x_t, self.timestep, text, added, inject)
        null, null_added = uncond
        n = len(jobs)
        both = self.model_output(
            jobs.twice(), torch.cat([x_t, x_t]), self.timestep, torch.cat([null.to(text.dtype), text]),
            {k: torch.cat([null_added[k], v]) for k, v in added.items()}, inject,
            active=torch.arange(2 * n) >= n,
        )  # fmt: skip
        u, c = both.chunk(2)
        return u + self.guidance_scale * (c - u)

    def model_output(self, jobs: Jobs, x: torch.Tensor, timestep: int, text: torch.Tensor, added: dict,
                     inject: bool = True, active: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The UNet's raw output (eps, v, ...) at `timestep`; with the layout injected when `inject`."""
        t = torch.full((len(x),), timestep, device=x.device, dtype=torch.long)
        kwargs = self.unet_inputs(jobs, x, t, text) if inject else {}
        if added:
            kwargs["added_cond_kwargs"] = added
        kwargs.update(self.lcm_condition(len(x)))
        with self.injection(jobs, active) if inject else contextlib.nullcontext():
            if self.models_info.is_flow:
                out = velocity(self.models_info, x, self.sigma, text, kwargs.pop("added_cond_kwargs"), self.guidance, kwargs)
            else:
                out = self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=text.to(self.unet.dtype), **kwargs).sample
        return out.float()

    @torch.no_grad()
    def reconstruct(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, x0_hat) latents of every job with the layout *not* injected: how well the
        start latents (noise or inversion) let one step reproduce the image."""
        jobs = self.make_jobs(samples)
        with self.autocast():
            x0 = self.encode_images(samples)[jobs.sample_index].float()
            text, added = self.encode_prompts(jobs.prompts)
            return x0, self.regenerate(jobs, x0, text, added, inject=False)
