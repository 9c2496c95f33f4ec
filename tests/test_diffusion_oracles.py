"""The one-step regeneration, DDIM inversion and the attention modulations checked against
diffusers itself and against DenseDiffusion's equations (naver-ai/DenseDiffusion,
`mod_forward`), re-derived here independently of the code under test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDPMScheduler

from datamodules import VOCFolderDataModule
from strategies.injectors import AttentionInjection, NoInjection
from strategies.injectors import attention as attention_module
from strategies.injectors.attention import EMIProcessor, LayoutMasks
from strategies.injectors.jobs import noise_for


@pytest.fixture(scope="module")
def samples(demo_root):
    dm = VOCFolderDataModule(str(demo_root), limit=3)
    dm.setup()
    return [dm.dataset[i] for i in range(3)]


def record_unet_and_decoder(inj, monkeypatch):
    seen = {"unet": [], "decode": []}
    unet_forward, decode = inj.unet.forward, inj.vae.decode

    def unet(sample, timestep, *args, **kwargs):
        out = unet_forward(sample, timestep, *args, **kwargs)
        seen["unet"].append((sample.detach().clone(), timestep.clone(), out.sample.detach().clone()))
        return out

    def decoder(z, *args, **kwargs):
        seen["decode"].append(z.detach().clone())
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(inj.unet, "forward", unet)
    monkeypatch.setattr(inj.vae, "decode", decoder)
    return seen


@pytest.mark.parametrize("model", ["tiny", "tiny-v"])
def test_xt_and_x0_equal_diffusers_scheduler(samples, model, monkeypatch):
    inj = AttentionInjection(model=model, alpha=10.0)
    assert inj.prediction_type == ("v_prediction" if model == "tiny-v" else "epsilon")
    seen = record_unet_and_decoder(inj, monkeypatch)
    inj.generate(samples[:2])
    [(x_t, t, out)] = seen["unet"]
    [z] = seen["decode"]
    jobs = inj.make_jobs(samples[:2])
    x0 = inj.encode_images(samples[:2])[jobs.sample_index]
    noise = torch.stack([noise_for(sid, c, inj.seed, tuple(x0.shape[1:])) for sid, c in zip(jobs.sample_ids, jobs.class_ids)])
    scheduler = DDPMScheduler.from_config(inj.models_info.scheduler.config)
    assert not scheduler.config.clip_sample
    assert torch.all(t == 400)
    want_xt = scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(x_t, want_xt, rtol=1e-6, atol=1e-6)
    want_x0 = torch.stack([scheduler.step(o, 400, x).pred_original_sample for o, x in zip(out, x_t)])
    torch.testing.assert_close(z * inj.vae.config.scaling_factor, want_x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny", "tiny-v"])
def test_ddim_inversion_steps_equal_diffusers_inverse_scheduler(samples, model, monkeypatch):
    inj = NoInjection(model=model, inversion="ddim", inversion_steps=10)
    assert inj.inversion_timesteps == list(range(40, 401, 40))
    seen = record_unet_and_decoder(inj, monkeypatch)
    x0, _ = inj.reconstruct(samples[:1])
    calls = seen["unet"]
    assert len(calls) == 11  # 10 inversion steps, then the one-step regeneration
    inverse = DDIMInverseScheduler.from_config(inj.models_info.scheduler.config)
    inverse.set_timesteps(25)  # 1000 // 25 = 40: step() moves by 40, as our schedule does
    x = x0
    for (z, t, out), (next_z, _, _) in zip(calls[:-1], calls[1:]):
        torch.testing.assert_close(z, x, rtol=1e-5, atol=1e-5)
        x = inverse.step(out, int(t[0]), z).prev_sample
        torch.testing.assert_close(next_z, x, rtol=1e-5, atol=1e-5)
    assert int(calls[-1][1][0]) == 400


def test_null_text_needs_guidance_and_divisible_steps():
    with pytest.raises(ValueError, match="guidance_scale"):
        NoInjection(inversion="null_text", guidance_scale=1.0)
    with pytest.raises(ValueError, match="must divide"):
        NoInjection(inversion="ddim", inversion_steps=7)
    assert NoInjection(inversion="null_text").guidance_scale == 7.5
    assert NoInjection().guidance_scale == 1.0


def test_reconstruction_error_none_gt_ddim_gt_null_text(real_voc, monkeypatch):
    """Latent MSE of the one guided step (w = 7.5, no layout injection) back to the image
    latent, on the real sample images: random noise > DDIM inversion > Null-text."""
    dm = VOCFolderDataModule(str(real_voc), limit=4)
    dm.setup()
    samples = [dm.dataset[i] for i in range(4)]
    import strategies.injectors.generation as generation

    fitted = []
    real = generation.optimise_null_text
    monkeypatch.setattr(generation, "optimise_null_text", lambda *a: fitted.append(real(*a)) or fitted[-1])
    errors = {}
    for inversion in ("none", "ddim", "null_text"):
        inj = NoInjection(inversion=inversion, guidance_scale=7.5)
        x0, x0_hat = inj.reconstruct(samples)
        errors[inversion] = float(((x0_hat - x0) ** 2).mean())
        if inversion == "null_text":
            assert [len(losses) for _, losses in fitted] == [len(x0)]  # one fitted embedding per job
    print(f"latent reconstruction MSE at w=7.5: {errors}")
    assert errors["none"] > errors["ddim"] > errors["null_text"]


def test_guidance_combines_branches_and_injects_only_the_conditional_half(samples, monkeypatch):
    inj = AttentionInjection(alpha=10.0, guidance_scale=3.0)
    rows = []
    real = EMIProcessor.add_bias

    def add_bias(self, *args):
        rows.append(self.layout.active.clone())
        return real(self, *args)

    monkeypatch.setattr(EMIProcessor, "add_bias", add_bias)
    seen = record_unet_and_decoder(inj, monkeypatch)
    inj.generate(samples[:1])
    [(x, t, out)] = seen["unet"]
    n = len(inj.make_jobs(samples[:1]))
    assert x.shape[0] == 2 * n and torch.equal(x[:n], x[n:])
    assert all(torch.equal(r, torch.tensor([0.0] * n + [1.0] * n)) for r in rows)
    u, c = out.chunk(2)
    eps = u + 3.0 * (c - u)
    x0 = (x[:n] - math.sqrt(1 - inj.alpha_bar) * eps) / math.sqrt(inj.alpha_bar)
    torch.testing.assert_close(seen["decode"][0] * inj.vae.config.scaling_factor, x0, rtol=1e-5, atol=1e-5)


def attention_inputs(inj, samples, cross: bool):
    jobs = inj.make_jobs(samples[:1])
    block = inj.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    attn = block.attn2 if cross else block.attn1
    n = (inj.resolution // 8) ** 2
    torch.manual_seed(1)
    hidden = torch.randn(len(jobs), n, attn.to_q.in_features)
    context = torch.randn(len(jobs), 77, attn.to_k.in_features) if cross else None
    return jobs, attn, hidden, context, n


@pytest.mark.parametrize("cross", [True, False])
def test_emi_bias_is_alpha_times_mask_exactly(samples, cross, monkeypatch):
    inj = AttentionInjection(alpha=7.0)
    jobs, attn, hidden, context, n = attention_inputs(inj, samples, cross)
    captured = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention",
                        lambda q, k, v, attn_mask=None, **kw: captured.append(attn_mask) or real_sdpa(q, k, v, attn_mask=attn_mask, **kw))  # fmt: skip
    EMIProcessor("x", LayoutMasks(jobs, torch.device("cpu")), inj)(attn, hidden, encoder_hidden_states=context)
    [bias] = captured
    side = int(math.isqrt(n))
    m = F.interpolate(jobs.masks[:, None], size=(side, side), mode="nearest").flatten(1)  # [J, N]
    other = jobs.token_masks.float() if cross else m
    want = 7.0 * attn.scale * m[:, :, None] * other[:, None, :]
    assert all(torch.equal(bias[:, h], want) for h in range(attn.heads))  # diffusers repeats it per head
    assert bias.abs().sum() > 0 and (bias == 0).any()


def densediffusion_reference(sim, pos, size_reg, w, treg):
    """DenseDiffusion's mod_forward, line for line on a [B*heads, N, M] score tensor."""
    min_value = sim.min(-1)[0].unsqueeze(-1)
    max_value = sim.max(-1)[0].unsqueeze(-1)
    mask = pos
    sim = sim.clone()
    sim += (mask > 0) * size_reg * w * treg * (max_value - sim)
    sim -= ~(mask > 0) * size_reg * w * treg * (sim - min_value)
    return sim.softmax(dim=-1)


@pytest.mark.parametrize("cross", [True, False])
def test_densediffusion_mode_equals_reference(samples, cross, monkeypatch):
    inj = AttentionInjection(mode="densediffusion", creg=1.0, sreg=0.3, sizereg=1.0)
    assert inj.treg_value == pytest.approx(0.47)
    jobs, attn, hidden, context, n = attention_inputs(inj, samples, cross)
    seen = []
    real = EMIProcessor.densediffusion
    monkeypatch.setattr(EMIProcessor, "densediffusion", lambda self, *a: seen.append(real(self, *a)) or seen[-1])
    EMIProcessor("x", LayoutMasks(jobs, torch.device("cpu")), inj)(attn, hidden, encoder_hidden_states=context)
    [scores] = seen
    probs = scores.softmax(-1)
    # reference inputs built as DenseDiffusion builds them: layouts incl. the background segment
    side = int(math.isqrt(n))
    fg = F.interpolate(jobs.masks[:, None], size=(side, side), mode="nearest").flatten(1)  # [J, N]
    layouts = torch.stack([fg, 1 - fg], 1)  # [J, segments, N]
    same = torch.einsum("jsn,jsm->jnm", layouts, layouts)  # sreg_maps
    size_reg = 1 - 1.0 * same.sum(-1, keepdim=True) / n  # reg_sizes
    if cross:
        pww = fg[:, :, None] * jobs.token_masks.float()[:, None, :]  # creg_maps: segment tokens only
        pos, w = pww, 1.0
    else:
        pos, w = same, 0.3
    q = attn.to_q(hidden).view(len(jobs), n, attn.heads, -1).transpose(1, 2)
    src = context if cross else hidden
    k = attn.to_k(src).view(len(jobs), src.shape[1], attn.heads, -1).transpose(1, 2)
    sim = (q @ k.transpose(-1, -2)) * attn.scale
    heads = attn.heads
    want = densediffusion_reference(
        sim.flatten(0, 1), pos.repeat_interleave(heads, 0), size_reg.repeat_interleave(heads, 0), w, 0.47
    ).view_as(probs)
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    if cross:  # inside the mask, every other token (start, end, padding, "A photo of") loses mass
        plain = sim.softmax(-1)
        others, inside = ~jobs.token_masks[0], fg[0] > 0
        assert (probs[0][:, inside][..., others].sum(-1) < plain[0][:, inside][..., others].sum(-1)).all()


def test_densediffusion_default_changes_images_clearly(samples):
    plain = NoInjection().generate(samples)
    diffs = {}
    for treg in (None, 0.47):
        out = AttentionInjection(mode="densediffusion", treg=treg).generate(samples)
        d = torch.cat([(a.images.float() - b.images.float()).abs().flatten() for a, b in zip(out, plain)])
        diffs[treg] = (float(d.mean()), float(d.max()))
    print(f"|DenseDiffusion - plain| (mean, max grey levels): schedule (t/1000)^5 {diffs[None]}, default {diffs[0.47]}")
    assert diffs[0.47][1] >= 10 and diffs[0.47][0] > 10 * diffs[None][0]


def test_injectors_on_one_checkpoint_share_its_modules():
    a, b = AttentionInjection(timestep=100), AttentionInjection(mode="densediffusion", timestep=700)
    assert a.unet is b.unet and a.vae is b.vae and a.text_encoder is b.text_encoder
    from torch import nn

    both = nn.ModuleDict({"a": a, "b": b})
    assert sum(p.numel() for p in both.parameters()) == sum(p.numel() for p in a.parameters())


def test_refiners_on_one_clip_share_it_and_configs_hold_one_copy():
    from strategies.refiners import Correspondence

    a, b = Correspondence(beta=0.8), Correspondence(preset="wsss", conf_range=(0.1, 0.7))
    assert a.encoder.visual is b.encoder.visual
    import g4seg

    _, chain_a = g4seg.load_strategy("configs/paper/tiny/table3_ablation.yaml", "sca+emi")
    _, chain_b = g4seg.load_strategy("configs/paper/tiny/table3_ablation.yaml", "sca+emi+cf")
    assert chain_a[0].encoder.visual is chain_b[0].encoder.visual
