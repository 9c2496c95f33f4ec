"""Building blocks for G4Seg on SD3 (flow matching, MMDiT joint attention), against
diffusers itself: the one-step x_t and x0 against `FlowMatchEulerDiscreteScheduler`'s
`scale_noise` and `step`; the joint-attention EMI against `JointAttnProcessor2_0` (alpha 0,
bit for bit) and against the bias written out by hand from Eq. 3 / Eq. 4."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from strategies.injectors.flow_matching import flow_sigma, noised, x0_from_velocity


@pytest.mark.parametrize("shift, mu", [(1.0, None), (3.0, None), (None, 0.8)])
def test_one_step_x_t_and_x0_are_the_flow_matching_schedulers(shift, mu):
    if mu is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    else:  # Flux: the exponential shift with mu from the token count
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    scheduler.set_timesteps(sigmas=[0.4], mu=mu)  # G4Seg's t_s = 400 of 1000
    sigma = flow_sigma(400, 1000, shift or 1.0, mu)
    assert abs(float(scheduler.sigmas[0]) - sigma) < 1e-6 and float(scheduler.sigmas[1]) == 0.0
    g = torch.Generator().manual_seed(0)
    x0, noise, velocity = (torch.randn(2, 16, 8, 8, generator=g) for _ in range(3))
    x_t = noised(x0, noise, sigma)
    torch.testing.assert_close(x_t, scheduler.scale_noise(x0, scheduler.timesteps[:1], noise))
    stepped = scheduler.step(velocity, scheduler.timesteps[0], x_t).prev_sample  # sigma -> 0: the clean estimate
    torch.testing.assert_close(x0_from_velocity(x_t, velocity, sigma), stepped)
    torch.testing.assert_close(x0_from_velocity(x_t, noise - x0, sigma), x0)  # the true velocity gives x0 back


@pytest.fixture(scope="module")
def sd3():
    from g4seg.models.tiny import tiny_sd3

    return tiny_sd3()


def jobs_for(masks: torch.Tensor, tokens: torch.Tensor):
    from strategies.injectors.jobs import Jobs

    n = len(masks)
    return Jobs(list(range(n)), [f"s{i}" for i in range(n)], [1] * n, masks, tokens, ["p"] * n, ["c"] * n)


def inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(n, 16, 16, 16, generator=g), encoder_hidden_states=torch.randn(n, 77, 32, generator=g),
                pooled_projections=torch.randn(n, 32, generator=g), timestep=torch.full((n,), 400.0))  # fmt: skip


def layouts(n: int):
    """Masks at the latent grid in 2 x 2 blocks (one value per 2 x 2 patch token), and class
    tokens at positions 5 and 6 of the CLIP prompt."""
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(n, 8, 8, generator=g) > 0.5).float().repeat_interleave(2, 1).repeat_interleave(2, 2)
    tokens = torch.zeros(n, 77, dtype=torch.bool)
    tokens[:, 5:7] = True
    return masks, tokens


def run(transformer, n: int, alpha: float | None, masks=None, tokens=None, seed: int = 0):
    from strategies.injectors.attention import LayoutMasks
    from strategies.injectors.joint_attention import JointEMIProcessor

    saved = dict(transformer.attn_processors)
    if alpha is not None:
        layout = LayoutMasks(jobs_for(masks, tokens), torch.device("cpu"))
        transformer.set_attn_processor(JointEMIProcessor(layout, alpha))
    try:
        with torch.no_grad():
            return transformer(**inputs(n, seed)).sample
    finally:
        transformer.set_attn_processor(saved)


def test_alpha_zero_is_diffusers_joint_processor_bit_for_bit(sd3):
    masks, tokens = layouts(2)
    stock = run(sd3["transformer"], 2, None)
    assert torch.equal(run(sd3["transformer"], 2, 0.0, masks, tokens), stock)
    assert not torch.allclose(run(sd3["transformer"], 2, 10.0, masks, tokens), stock, atol=1e-3)


def test_the_sdpa_bias_is_alpha_m_on_image_rows_and_zero_on_text_rows(sd3, monkeypatch):
    import strategies.injectors.joint_attention as joint

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.shape[-1], attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(joint.F, "scaled_dot_product_attention", spy)
    masks, tokens = layouts(1)
    alpha = 10.0
    run(sd3["transformer"], 1, alpha, masks, tokens)
    assert len(seen) == 2  # one joint attention per block
    m = masks[0, ::2, ::2].flatten()  # the token grid's 8 x 8 values
    n_img, n_txt = 64, 77
    for head_dim, bias in seen:
        scale = head_dim**-0.5
        expected = torch.zeros(n_img + n_txt, n_img + n_txt)
        for i in range(n_img):
            for j in range(n_img):
                expected[i, j] = alpha * scale * m[i] * m[j]
            for j in range(n_txt):
                expected[i, n_img + j] = alpha * scale * m[i] * float(tokens[0, j])
        assert bias.shape == (1, 1, n_img + n_txt, n_img + n_txt)
        torch.testing.assert_close(bias[0, 0], expected)


def test_batched_classes_equal_one_at_a_time(sd3):
    masks, tokens = layouts(3)
    together = run(sd3["transformer"], 3, 10.0, masks, tokens, seed=2)
    for i in range(3):
        alone_inputs = {k: v[i : i + 1] for k, v in inputs(3, seed=2).items()}
        from strategies.injectors.attention import LayoutMasks
        from strategies.injectors.joint_attention import JointEMIProcessor

        transformer = sd3["transformer"]
        saved = dict(transformer.attn_processors)
        transformer.set_attn_processor(JointEMIProcessor(LayoutMasks(jobs_for(masks[i : i + 1], tokens[i : i + 1]),
                                                                     torch.device("cpu")), 10.0))  # fmt: skip
        try:
            with torch.no_grad():
                alone = transformer(**alone_inputs).sample
        finally:
            transformer.set_attn_processor(saved)
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-4)


def test_the_injectors_sd3_step_is_diffusers_pieces_put_together(real_voc):
    """NoInjection on "tiny-sd3": x0 is the VAE latent as SD3's img2img pipeline centres and
    scales it, x0_hat is the scheduler's step from the noised latent with the transformer
    called as SD3's pipeline calls it (timestep = sigma x 1000, pooled projections)."""
    from datamodules import VOCFolderDataModule
    from helpers import sd3_step_from_pieces
    from strategies.injectors import NoInjection

    dm = VOCFolderDataModule(str(real_voc), limit=2)
    dm.setup()
    samples = [dm.dataset[i] for i in range(2)]
    inj = NoInjection(model="tiny-sd3")
    x0, x0_hat = inj.reconstruct(samples)
    _, latents, expected = sd3_step_from_pieces(inj, samples, 0.4)
    torch.testing.assert_close(x0, latents)
    torch.testing.assert_close(x0_hat, expected, atol=1e-5, rtol=1e-4)


def test_sd3_refuses_what_it_cannot_run_in_one_line():
    from g4seg.errors import ConfigError
    from strategies.injectors import AttentionInjection, ControlNetInjection

    with pytest.raises(ConfigError, match="densediffusion"):
        AttentionInjection(model="tiny-sd3", mode="densediffusion")
    with pytest.raises(ConfigError, match="start from noise"):
        AttentionInjection(model="tiny-sd3", inversion="ddim")
    with pytest.raises(ConfigError, match="no ControlNet"):
        ControlNetInjection(model="tiny-sd3", controlnet="tiny")


# -- Flux: the bias rides on diffusers' own FluxAttnProcessor (double- and single-stream) --


def test_flux_bias_reaches_every_attention_as_alpha_m_with_text_first(monkeypatch, real_voc):
    """The EMI bias that reaches SDPA in Flux's double- and single-stream blocks: text rows 0,
    image rows alpha * M / sqrt(d) over [T5 class tokens; image patches], written out here."""
    from datamodules import VOCFolderDataModule
    from strategies.injectors import AttentionInjection

    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kw):
        seen.append((query.shape, attn_mask))
        return real(query, key, value, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    dm = VOCFolderDataModule(str(real_voc), limit=1)
    dm.setup()
    sample = dm.dataset[0]
    inj = AttentionInjection(model="tiny-flux", alpha=10.0)
    inj.generate([sample])
    jobs = inj.make_jobs([sample])
    n_img, n_txt = 64, 512  # 128 px -> 16 x 16 latents -> 8 x 8 packed tokens; T5's 512 positions
    blocks = [(shape, mask) for shape, mask in seen if shape[-2] == n_txt + n_img]  # not the T5 encoder's own
    assert len(blocks) == 2 and all(mask is not None for _, mask in blocks)  # the double- and the single-stream block
    side = 8
    for shape, bias in blocks:
        head_dim = shape[-1]
        assert bias.shape == (len(jobs), 1, n_txt + n_img, n_txt + n_img)
        for j in range(len(jobs)):
            m = F.interpolate(jobs.masks[j][None, None], size=(side, side), mode="nearest").flatten()
            tok = jobs.token_masks[j].float()
            expected = torch.zeros(n_txt + n_img, n_txt + n_img)
            expected[n_txt:, :n_txt] = 10.0 * head_dim**-0.5 * m[:, None] * tok[None, :]
            expected[n_txt:, n_txt:] = 10.0 * head_dim**-0.5 * m[:, None] * m[None, :]
            torch.testing.assert_close(bias[j, 0].float(), expected)
        assert int(jobs.token_masks.sum()) >= len(jobs)  # every prompt's class name found among T5's tokens


def test_flux_step_is_diffusers_pieces_put_together(real_voc):
    """NoInjection on "tiny-flux" against FluxPipeline's own pieces: prompt encoding, 2 x 2
    packing and position ids, the scheduler's dynamic shift (mu from the token count) and
    step, the transformer read at timestep sigma with the guidance embedding."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from datamodules import VOCFolderDataModule
    from strategies.injectors import NoInjection
    from strategies.injectors.jobs import noise_for

    dm = VOCFolderDataModule(str(real_voc), limit=1)
    dm.setup()
    samples = [dm.dataset[0]]
    inj = NoInjection(model="tiny-flux")
    x0, x0_hat = inj.reconstruct(samples)
    jobs = inj.make_jobs(samples)
    models = inj.models_info
    pipe = models.pipeline()
    n, c, h, w = x0.shape
    with torch.no_grad():
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(models.scheduler.config)
        mu = calculate_shift((h // 2) * (w // 2), 256, 4096, 0.5, 1.15)
        scheduler.set_timesteps(sigmas=[0.4], mu=mu)
        t = scheduler.timesteps[0]
        noise = torch.stack([noise_for(sid, k, inj.seed, (c, h, w)) for sid, k in zip(jobs.sample_ids, jobs.class_ids)])
        x_t = scheduler.scale_noise(x0, t.expand(n), noise)
        embeds, pooled, text_ids = pipe.encode_prompt(jobs.prompts, None, max_sequence_length=512)
        packed = pipe._pack_latents(x_t, n, c, h, w)
        out = models.unet(hidden_states=packed, timestep=t.expand(n) / 1000, guidance=torch.full((n,), 3.5),
                          pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                          img_ids=pipe._prepare_latent_image_ids(n, h // 2, w // 2, x0.device, x0.dtype)).sample  # fmt: skip
        velocity = pipe._unpack_latents(out, h * 8, w * 8, 8)
        expected = scheduler.step(velocity, t, x_t).prev_sample
    torch.testing.assert_close(x0_hat, expected, atol=1e-5, rtol=1e-4)


def test_flux_refuses_what_it_cannot_run_in_one_line():
    from g4seg.errors import ConfigError
    from strategies.injectors import AttentionInjection

    with pytest.raises(ConfigError, match="guidance as an embedding"):
        AttentionInjection(model="tiny-flux", guidance_scale=3.0)
    with pytest.raises(ConfigError, match="densediffusion"):
        AttentionInjection(model="tiny-flux", mode="densediffusion")


def test_sd3_biases_the_class_tokens_of_its_clip_and_t5_prompts(monkeypatch, real_voc):
    """With T5 loaded, SD3's text sequence is [CLIP 77; T5 256]: the class name's tokens of
    both prompts get the cross bias (columns after the 64 image patches), nothing else does."""
    import strategies.injectors.joint_attention as joint
    from datamodules import VOCFolderDataModule
    from strategies.injectors import AttentionInjection

    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(joint.F, "scaled_dot_product_attention",
                        lambda q, k, v, attn_mask=None, **kw: seen.append((q.shape[-1], attn_mask)) or real(q, k, v, attn_mask=attn_mask, **kw))  # fmt: skip
    dm = VOCFolderDataModule(str(real_voc), limit=1)
    dm.setup()
    inj = AttentionInjection(model="tiny-sd3", alpha=10.0)
    jobs = inj.make_jobs([dm.dataset[0]])
    assert jobs.token_masks.shape[1] == 77 + 256
    assert bool(jobs.token_masks[:, :77].any(1).all()) and bool(jobs.token_masks[:, 77:].any(1).all())
    inj.generate([dm.dataset[0]])
    n_img = 64
    head_dim, bias = next((d, b) for d, b in seen if b is not None and b.shape[-1] == n_img + 77 + 256)  # not T5's own
    for j in range(len(jobs)):
        m = F.interpolate(jobs.masks[j][None, None], size=(8, 8), mode="nearest").flatten()
        text_block = bias[j, 0, :n_img, n_img:].float()
        expected = 10.0 * head_dim**-0.5 * m[:, None] * jobs.token_masks[j].float()[None, :]
        torch.testing.assert_close(text_block, expected)


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_alpha_zero_is_plain_generation_and_batches_equal_single_images(model, real_voc):
    from datamodules import VOCFolderDataModule
    from strategies.injectors import AttentionInjection, NoInjection

    dm = VOCFolderDataModule(str(real_voc), limit=2)
    dm.setup()
    samples = [dm.dataset[i] for i in range(2)]
    plain = NoInjection(model=model).generate(samples)
    zero = AttentionInjection(model=model, alpha=0.0).generate(samples)
    assert all(torch.equal(a.images, b.images) for a, b in zip(plain, zero))
    inj = AttentionInjection(model=model, alpha=10.0)
    together = inj.generate(samples)
    assert not all(torch.equal(a.images, b.images) for a, b in zip(plain, together))  # the layout acts
    for s, batched in zip(samples, together):
        (alone,) = inj.generate([s])
        assert int((alone.images.int() - batched.images.int()).abs().max()) <= 1


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_a_saved_sd3_or_flux_folder_loads_through_the_real_path(kind, tmp_path):
    """A pipeline saved with save_pretrained (the layout of the released folders) loads by
    its model_index.json through diffusers' own pipeline class, and runs."""
    import diffusers
    import numpy as np

    from g4seg.models.diffusion import load_diffusion
    from g4seg.models.tiny import tiny_flux, tiny_sd3
    from g4seg.types import ClassProbs, Sample
    from strategies.injectors import AttentionInjection

    parts = tiny_sd3() if kind == "sd3" else tiny_flux()
    cls = diffusers.StableDiffusion3Pipeline if kind == "sd3" else diffusers.FluxPipeline
    cls(**parts).save_pretrained(tmp_path / kind)
    models = load_diffusion(str(tmp_path / kind))
    assert (models.is_sd3, models.is_flux) == ((True, False) if kind == "sd3" else (False, True))
    assert not models.random_weights and models.default_resolution == (128 if kind == "sd3" else 1024)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    gt = torch.zeros(48, 64, dtype=torch.int64)
    gt[10:30, 20:40] = 15
    probs = torch.stack([1 - (gt == 15).float(), (gt == 15).float()]) * 0.8 + 0.1
    sample = Sample("x", image, gt, ["background"] + ["c"] * 14 + ["person"], ClassProbs(torch.tensor([0, 15]), probs))
    (out,) = AttentionInjection(model=str(tmp_path / kind), resolution=128).generate([sample])
    assert out.images.shape == (1, 48, 64, 3)
