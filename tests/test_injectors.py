"""Diffusion injectors on tiny random models: formula, injection, batching, restoration."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from datamodules import VOCFolderDataModule
from g4seg.errors import ConfigError, ModelNotFoundError
from strategies.injectors import AttentionInjection, ControlNetInjection, NoInjection
from strategies.injectors.ade20k import ADE20K, ade20k_palette
from strategies.injectors.attention import EMIProcessor, LayoutMasks
from strategies.injectors.controlnet import class_colours, condition_image
from strategies.injectors.jobs import noise_for


@pytest.fixture(scope="module")
def samples(demo_root):
    dm = VOCFolderDataModule(str(demo_root), limit=3)
    dm.setup()
    return [dm.dataset[i] for i in range(3)]  # 2 + 2 + 1 foreground classes


def images_of(generated):
    return {(g.sample_id, c): img for g in generated for c, img in zip(g.class_ids, g.images)}


def test_alpha_zero_is_exactly_no_injection(samples):
    plain = images_of(NoInjection().generate(samples))
    for inj in (AttentionInjection(alpha=0.0), AttentionInjection(mode="densediffusion", creg=0.0, sreg=0.0)):
        got = images_of(inj.generate(samples))
        assert got.keys() == plain.keys()
        assert all(torch.equal(got[k], plain[k]) for k in plain)
    injected = images_of(AttentionInjection(alpha=10.0).generate(samples))
    assert any(not torch.equal(injected[k], plain[k]) for k in plain), "alpha > 0 must change the images"


def cross_mass(probs: torch.Tensor, pixel_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per query pixel: attention probability on the class tokens, averaged over heads."""
    return probs[..., tokens].sum(-1).mean(1)  # [J, Nq]


def attention_probabilities(monkeypatch) -> list[torch.Tensor]:
    """Spy on torch's SDPA (what diffusers' AttnProcessor2_0 calls): the probabilities of every call."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        s = (q @ k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
        seen.append((s if attn_mask is None else s + attn_mask).softmax(-1))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return seen


def test_emi_moves_attention_to_class_tokens_inside_the_mask_only(samples, monkeypatch):
    inj = AttentionInjection(alpha=10.0)
    jobs = inj.make_jobs(samples[:1])
    attn = inj.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    n = (inj.resolution // 8) ** 2
    torch.manual_seed(0)
    hidden = torch.randn(len(jobs), n, attn.to_q.in_features)
    text = torch.randn(len(jobs), 77, attn.to_k.in_features)
    layout = LayoutMasks(jobs, torch.device("cpu"))
    calls = attention_probabilities(monkeypatch)
    seen = {}
    for alpha in (0.0, 10.0):
        inj.alpha = alpha
        EMIProcessor("x", layout, inj)(attn, hidden, encoder_hidden_states=text)
        seen[alpha] = calls[-1]
    inside = layout.at(n) > 0
    tokens = jobs.token_masks[0]
    before, after = cross_mass(seen[0.0], inside, tokens), cross_mass(seen[10.0], inside, tokens)
    assert (after[inside] > before[inside]).all(), "in-mask pixels must attend more to class tokens"
    assert torch.allclose(seen[0.0].transpose(1, 2)[~inside], seen[10.0].transpose(1, 2)[~inside], atol=0, rtol=0)
    print(f"class-token mass inside the mask: {before[inside].mean():.4f} -> {after[inside].mean():.4f}")

    # and through a whole UNet call: averaged over every cross-attention layer
    means = {}
    for alpha in (0.0, 10.0):
        inj.alpha = alpha
        calls.clear()
        inj.generate(samples[:1])
        masses = []
        for p in calls:
            if p.shape[-1] == 77 and p.shape[2] != 77:  # UNet cross-attention (not the text encoder's own)
                m = LayoutMasks(jobs, torch.device("cpu")).at(p.shape[2]) > 0
                masses.append(cross_mass(p, m, jobs.token_masks[0])[m].mean())
        means[alpha] = torch.stack(masses).mean()
    assert means[10.0] > means[0.0]


def test_processors_are_restored_even_on_error(samples, monkeypatch):
    inj = AttentionInjection()
    before = {k: type(v) for k, v in inj.unet.attn_processors.items()}
    inj.generate(samples[:1])
    assert {k: type(v) for k, v in inj.unet.attn_processors.items()} == before

    def boom(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(EMIProcessor, "add_bias", boom)
    with pytest.raises(RuntimeError, match="boom"):
        inj.generate(samples[:1])
    assert {k: type(v) for k, v in inj.unet.attn_processors.items()} == before
    assert not any(isinstance(p, EMIProcessor) for p in inj.unet.attn_processors.values())


class PerfectEps(nn.Module):
    """A UNet stand-in that returns the true noise, read from the injector's own seeding."""

    def __init__(self, noise: torch.Tensor):
        super().__init__()
        self.noise = noise
        self.dtype = torch.float32

    def forward(self, x, t, encoder_hidden_states=None, **kwargs):
        return SimpleNamespace(sample=self.noise)


def test_x0_formula_by_hand(samples):
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    a = float(torch.cumprod(1 - betas, 0)[400])
    inj = NoInjection()
    assert inj.alpha_bar == pytest.approx(a, rel=1e-6)
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    expect = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    assert torch.allclose(inj.x0_hat(eps, x_t), expect, atol=1e-5)
    x0 = torch.randn(2, 4, 8, 8)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0
    assert torch.allclose(NoInjection(model="tiny-v").x0_hat(v, x_t), x0, atol=1e-5)

    # whole pipeline: with the true eps, one step returns the VAE reconstruction of the image
    sample = samples[2]
    jobs = inj.make_jobs([sample])
    latents = inj.encode_images([sample])
    noise = noise_for(sample.id, jobs.class_ids[0], inj.seed, tuple(latents.shape[1:]))[None]
    inj.unet = PerfectEps(noise)
    [gen] = inj.generate([sample])
    recon = inj.vae.decode(latents / inj.vae.config.scaling_factor).sample
    recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    import cv2

    h, w = sample.size
    recon = cv2.resize(recon, (w, h), interpolation=cv2.INTER_LINEAR)
    assert np.abs(gen.images[0].numpy().astype(int) - recon.astype(int)).max() <= 1


def test_batched_classes_equal_one_at_a_time(samples):
    inj = AttentionInjection(alpha=10.0)
    batched = images_of(inj.generate(samples))
    inj.max_batch = 1
    single = {}
    for s in reversed(samples):
        single.update(images_of(inj.generate([s])))
    assert batched.keys() == single.keys() and len(batched) == 5
    worst = max(int((batched[k].int() - single[k].int()).abs().max()) for k in batched)
    print(f"largest pixel difference batched vs one at a time: {worst}")
    assert worst <= 1


def test_controlnet_condition_colours_and_effect(samples):
    sample = samples[0]  # aeroplane (1) and person (15)
    inj = ControlNetInjection()
    jobs = inj.make_jobs([sample])
    cond = condition_image(jobs.masks, class_colours(jobs.names))
    palette = ade20k_palette()
    for j, name in enumerate(jobs.names):
        ade = {"aeroplane": "airplane", "person": "person"}[name]
        colour = torch.tensor(palette[ADE20K.index(ade)], dtype=torch.float32) / 255
        inside = jobs.masks[j] > 0
        assert inside.any()
        assert torch.allclose(cond[j].permute(1, 2, 0)[inside], colour.expand(int(inside.sum()), 3))
        assert (cond[j].permute(1, 2, 0)[~inside] == 0).all()
    with_cn = images_of(inj.generate([sample]))
    inj.conditioning_scale = 0.0
    without = images_of(inj.generate([sample]))
    assert any(not torch.equal(with_cn[k], without[k]) for k in with_cn), "ControlNet residuals must reach the UNet"


def test_densediffusion_mode_and_sdxl_run(samples):
    plain = images_of(NoInjection().generate(samples[2:]))
    dd = images_of(AttentionInjection(mode="densediffusion", creg=1.0, sreg=0.3, treg_power=1.0).generate(samples[2:]))
    assert any(not torch.equal(dd[k], plain[k]) for k in plain)
    [gen] = AttentionInjection(model="tiny-sdxl").generate(samples[2:])
    assert gen.images.shape == (1, *samples[2].size, 3)
    lcm = NoInjection(model="tiny-lcm")
    assert lcm.models_info.is_lcm
    low = images_of(lcm.generate(samples[2:]))
    lcm.guidance = 2.0  # the guidance embedding must reach the UNet
    assert any(not torch.equal(v, images_of(lcm.generate(samples[2:]))[k]) for k, v in low.items())


def test_missing_model_says_what_to_download():
    with pytest.raises(ModelNotFoundError, match="hf download .*stable-diffusion"):
        NoInjection(model="/nonexistent/models/sd21")
    with pytest.raises(ModelNotFoundError, match="control_v11p_sd15_seg"):
        ControlNetInjection(model="/nonexistent/models/sd15", controlnet="./missing-controlnet")


def test_bf16_autocast_agrees_with_fp32_on_the_cpu(real_voc):
    """precision: bf16 runs the diffusion models under bf16 autocast (also on the CPU); the
    generated images stay within a few grey levels of fp32 and the refined labels agree."""
    from datamodules import VOCFolderDataModule
    from strategies.injectors import AttentionInjection
    from strategies.refiners import Correspondence

    dm = VOCFolderDataModule(str(real_voc), limit=3)
    dm.setup()
    samples = [dm.dataset[i] for i in range(3)]
    runs = {}
    for precision in ("fp32", "bf16"):
        generated = AttentionInjection(model="tiny", precision=precision).generate(samples)
        runs[precision] = (generated, [Correspondence().refine(s, s.coarse, g).labels() for s, g in zip(samples, generated)])
    (g32, l32), (g16, l16) = runs["fp32"], runs["bf16"]
    diff = torch.cat([(a.images.float() - b.images.float()).abs().flatten() for a, b in zip(g32, g16)])
    assert 0 < float(diff.mean()) < 2.0  # bf16 did run (not bit-equal), and stays close
    assert min(float((a == b).float().mean()) for a, b in zip(l32, l16)) > 0.999
    with pytest.raises(ConfigError, match="precision must be one of"):
        AttentionInjection(model="tiny", precision="half")
