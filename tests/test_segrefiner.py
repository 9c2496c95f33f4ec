"""SegRefiner against its release (MengyuWang826/SegRefiner): the network against a plain
re-derivation of the published blocks (`diffusion_unet_head.py`), the transition diffusion
against the update equations of `segrefiner_base.py`, the window rule of
`segrefiner_semantic.py` worked by hand, and the released checkpoint layout."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from g4seg.errors import ConfigError
from g4seg.models.segrefiner import TINY_CONFIG, DenoiseUNet, UNetConfig
from g4seg.types import ClassProbs
from strategies.refiners import SegRefiner
from strategies.refiners.segrefiner.diffusion import Schedule, p_sample, p_sample_loop
from strategies.refiners.segrefiner.semantic import (
    TestConfig,
    Window,
    mixed,
    paste,
    window_boxes,
)

TINY_NET = dict(model_channels=32, channel_mult=[1, 1, 1, 2], num_res_blocks=1, attention_strides=[8], num_heads=2)


# --- the network -------------------------------------------------------------------------------


def _gn(x, sd, key):  # GroupNorm32: 32 groups, computed in float32
    return F.group_norm(x.float(), 32, sd[key + ".weight"], sd[key + ".bias"]).type(x.dtype)


def _res(x, emb, sd, key):
    h = F.conv2d(F.silu(_gn(x, sd, key + ".in_layers.0")), sd[key + ".in_layers.2.weight"], sd[key + ".in_layers.2.bias"], padding=1)
    h = h + F.linear(F.silu(emb), sd[key + ".emb_layers.1.weight"], sd[key + ".emb_layers.1.bias"])[:, :, None, None]
    h = F.conv2d(F.silu(_gn(h, sd, key + ".out_layers.0")), sd[key + ".out_layers.3.weight"], sd[key + ".out_layers.3.bias"], padding=1)
    skip = x if key + ".skip_connection.weight" not in sd else F.conv2d(x, sd[key + ".skip_connection.weight"], sd[key + ".skip_connection.bias"])
    return skip + h


def _attn(x, sd, key, heads):  # AttentionBlock + QKVAttention as published (einsum, split scale)
    b, c, hh, ww = x.shape
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(_gn(flat, sd, key + ".norm"), sd[key + ".qkv.weight"], sd[key + ".qkv.bias"])
    qkv = qkv.reshape(b * heads, -1, qkv.shape[2])
    ch = qkv.shape[1] // 3
    q, k, v = torch.split(qkv, ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, flat.shape[-1])
    h = F.conv1d(h, sd[key + ".proj_out.weight"], sd[key + ".proj_out.bias"])
    return (flat + h).reshape(b, c, hh, ww)


def _block(h, emb, sd, key, heads):
    """One TimestepEmbedSequential, its layers told apart by their published parameter names."""
    i = 0
    while any(k.startswith(f"{key}.{i}.") for k in sd):
        sub = f"{key}.{i}"
        if sub + ".in_layers.0.weight" in sd:
            h = _res(h, emb, sd, sub)
        elif sub + ".qkv.weight" in sd:
            h = _attn(h, sd, sub, heads)
        elif sub + ".op.weight" in sd:
            h = F.conv2d(h, sd[sub + ".op.weight"], sd[sub + ".op.bias"], stride=2, padding=1)
        elif sub + ".conv.weight" in sd:
            h = F.conv2d(F.interpolate(h, scale_factor=2, mode="nearest"), sd[sub + ".conv.weight"], sd[sub + ".conv.bias"], padding=1)
        else:
            h = F.conv2d(h, sd[sub + ".weight"], sd[sub + ".bias"], padding=1)
        i += 1
    return h


def published_forward(sd, x, t, heads, learned=True, model_channels=32):
    if learned:
        emb = sd["time_embed.weight"][t]
    else:  # iDDPM's timestep_embedding, then Linear-SiLU-Linear
        half = model_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        emb = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    n_in = len({k.split(".")[1] for k in sd if k.startswith("input_blocks.")})
    n_out = len({k.split(".")[1] for k in sd if k.startswith("output_blocks.")})
    hs, h = [], x
    for i in range(n_in):
        h = _block(h, emb, sd, f"input_blocks.{i}", heads)
        hs.append(h)
    h = _block(h, emb, sd, "middle_block", heads)
    for i in range(n_out):
        h = _block(torch.cat([h, hs.pop()], 1), emb, sd, f"output_blocks.{i}", heads)
    h = F.silu(_gn(h, sd, "out.0"))
    return F.conv2d(h, sd["out.2.weight"], sd["out.2.bias"], padding=1)


@pytest.mark.parametrize("learned", [True, False])
def test_network_equals_the_published_blocks(learned):
    torch.manual_seed(0)
    net = DenoiseUNet(UNetConfig(**{**TINY_NET, "channel_mult": (1, 1, 2), "attention_strides": (2, 4)}, learn_time_embd=learned)).eval()
    with torch.no_grad():
        for p in net.parameters():  # out of the default init's range, so every block matters
            p.add_(torch.randn_like(p) * 0.05)
        x, t = torch.randn(3, 4, 16, 24), torch.tensor([5, 2, 0])
        ours = net(x, t)
        ref = published_forward({k: v.detach() for k, v in net.state_dict().items()}, x, t, 2, learned)
    assert ours.shape == (3, 1, 16, 24)
    assert (ours - ref).abs().max().item() < 2e-5 * max(1.0, ref.abs().max().item())


def test_released_config_has_the_released_key_layout():
    """Keys and shapes of configs/segrefiner/segrefiner_lr.py's DenoiseUNet, counted from the
    published constructor: 18 input blocks (conv, 6 levels x 2 ResBlocks, 5 downsamples),
    attention at strides 16 and 32 (levels 4 and 5), 18 output blocks, upsample last in each."""
    net = DenoiseUNet(UNetConfig())
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["time_embed.weight"] == (6, 512)
    assert shapes["input_blocks.0.0.weight"] == (128, 4, 3, 3)
    assert shapes["input_blocks.7.0.skip_connection.weight"] == (256, 128, 1, 1)
    assert shapes["input_blocks.13.1.qkv.weight"] == (1536, 512, 1)
    assert shapes["input_blocks.17.1.proj_out.weight"] == (512, 512, 1)
    assert shapes["input_blocks.15.0.op.weight"] == (512, 512, 3, 3)
    assert "input_blocks.11.1.qkv.weight" not in shapes  # stride 8: no attention
    assert shapes["middle_block.1.norm.weight"] == (512,)
    assert shapes["output_blocks.0.0.in_layers.0.weight"] == (1024,)
    assert shapes["output_blocks.2.2.conv.weight"] == (512, 512, 3, 3)
    assert shapes["output_blocks.5.2.conv.weight"] == (512, 512, 3, 3)
    assert shapes["output_blocks.8.1.conv.weight"] == (256, 256, 3, 3)
    assert shapes["output_blocks.17.0.out_layers.3.weight"] == (128, 128, 3, 3)
    assert shapes["out.2.weight"] == (1, 128, 3, 3)
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")} == set(range(18))
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("output_blocks.")} == set(range(18))


def test_a_released_checkpoint_file_loads_strictly(tmp_path):
    """An mmdet checkpoint (meta + state_dict under "denoise_model.") loads with weights_only."""
    torch.manual_seed(1)
    src = DenoiseUNet(TINY_CONFIG)
    path = tmp_path / "segrefiner_hr_latest.pth"
    meta = {"mmdet_version": "2.25.1", "CLASSES": None, "iter": 40000, "config": "model = dict(...)"}
    torch.save({"meta": meta, "state_dict": {"denoise_model." + k: v for k, v in src.state_dict().items()}}, path)
    refiner = SegRefiner(weights=str(path), **TINY_NET, model_size=16)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([3])
    with torch.no_grad():
        assert torch.equal(refiner.net(x, t), src(x, t))
    broken = tmp_path / "short.pth"
    state = src.state_dict()
    state.pop("out.2.bias")
    torch.save({"state_dict": {"denoise_model." + k: v for k, v in state.items()}}, broken)
    with pytest.raises(ConfigError, match="short.pth: does not fit a SegRefiner network.*Missing key"):
        SegRefiner(weights=str(broken), **TINY_NET)
    with pytest.raises(ConfigError, match="does not fit"):  # the released network, tiny file
        SegRefiner(weights=str(path))


def test_safetensors_conversion_loads(tmp_path):
    from g4seg.models.segrefiner import save_safetensors

    src = DenoiseUNet(TINY_CONFIG)
    torch.save({"state_dict": {"denoise_model." + k: v for k, v in src.state_dict().items()}}, tmp_path / "a.pth")
    save_safetensors(str(tmp_path / "a.pth"), str(tmp_path / "a.safetensors"))
    refiner = SegRefiner(weights=str(tmp_path / "a.safetensors"), **TINY_NET)
    for k, v in src.state_dict().items():
        assert torch.equal(refiner.net.state_dict()[k], v)


def test_a_missing_or_unreadable_checkpoint_names_what_to_download(tmp_path):
    with pytest.raises(Exception, match="(?s)does not exist.*MengyuWang826/SegRefiner"):
        SegRefiner(weights=str(tmp_path / "segrefiner_hr_latest.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"<html>a download page, not a checkpoint</html>")
    with pytest.raises(Exception, match="garbage.pth: not a readable SegRefiner checkpoint") as caught:
        SegRefiner(weights=str(garbage))
    assert str(caught.value).splitlines()[0].endswith(")."), str(caught.value)


# --- the diffusion -----------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """A network that answers hand-made logits per timestep (and records what it saw)."""

    def __init__(self, by_t):
        super().__init__()
        self.by_t, self.seen = by_t, []

    def forward(self, x, t):
        self.seen.append((x.clone(), t.clone()))
        return self.by_t[int(t[0])].expand(len(x), -1, -1, -1)


def test_p_sample_is_the_published_update():
    s = Schedule.linear()
    np.testing.assert_allclose(s.betas_cumprod, np.linspace(0.8, 0, 6))
    logits = torch.tensor([[[[-3.0, 0.0], [0.5, 4.0]]]])
    fine = torch.tensor([[[[0.0, 0.2], [0.5, 0.9]]]])
    net = FixedLogits({3: logits})
    out, new = p_sample(net, s, torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2), fine, 3)
    conf = 2 * np.abs(1 / (1 + np.exp(-logits.numpy())) - 0.5)
    bc, bc_prev = 0.8 - 3 * 0.16, 0.8 - 2 * 0.16
    p = conf * (bc_prev - bc) / (1 - conf * bc)
    np.testing.assert_allclose(new.numpy(), fine.numpy() + (1 - fine.numpy()) * p, rtol=1e-6)
    assert torch.equal(out, logits)
    _, new0 = p_sample(net.__class__({0: logits}), s, torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2), fine, 0)
    p0 = conf * (1 - 0.8) / (1 - conf * 0.8)  # t = 0: beta_cumprod_prev is 1
    np.testing.assert_allclose(new0.numpy(), fine.numpy() + (1 - fine.numpy()) * p0, rtol=1e-6)


def test_p_sample_loop_is_the_published_loop():
    s = Schedule.linear()
    torch.manual_seed(0)
    by_t = {t: torch.randn(1, 1, 4, 4) * 3 for t in range(6)}
    x_last = (torch.rand(2, 1, 4, 4) > 0.5).float()
    image = torch.randn(2, 3, 4, 4)
    net = FixedLogits(by_t)
    got, fine = p_sample_loop(net, s, image, x_last, None, [5, 4, 3], [torch.Generator().manual_seed(i) for i in (7, 8)])
    # by hand: x <- pred where noise < fine, else the ORIGINAL coarse mask; last step sigmoid
    gens = [torch.Generator().manual_seed(i) for i in (7, 8)]
    x, f = x_last.clone(), torch.zeros_like(x_last)
    for t in (5, 4, 3):
        assert torch.equal(net.seen[5 - t][0], torch.cat([image, x], 1)) and net.seen[5 - t][1].tolist() == [t, t]
        lg = by_t[t].expand(2, -1, -1, -1)
        c = 2 * (lg.sigmoid() - 0.5).abs()
        prev = 1.0 if t == 0 else s.betas_cumprod[t - 1]
        f = f + (1 - f) * c * (prev - s.betas_cumprod[t]) / (1 - c * s.betas_cumprod[t])
        if t == 3:
            x = lg.sigmoid()
        else:
            noise = torch.stack([torch.rand(1, 4, 4, generator=g) for g in gens])
            x = torch.where(noise < f, (lg >= 0).float(), x_last)
    torch.testing.assert_close(got, x)
    torch.testing.assert_close(fine, f)


# --- the semantic procedure -------------------------------------------------------------------


def test_windows_follow_the_release_rule_worked_by_hand():
    fine = torch.ones(8, 8)
    fine[1, 1], fine[1, 2], fine[6, 6], fine[3, 7] = 0.2, 0.3, 0.5, 0.85
    cfg = TestConfig(model_size=8, fine_prob_thr=0.9, iou_thr=0.3)
    # points (y, x) x2 on a 16 x 16 image: (2, 2) s0.8, (2, 4) s0.7, (12, 12) s0.5, (6, 14) s0.15
    # windows of 8 centred, shifted inside: (0,0,8,8), (0,0,8,8), (8,8,16,16), (8,2,16,10)
    # NMS at 0.3 in score order: keep 1st, drop 2nd (IoU 1), keep 3rd (IoU 0), 4th: IoU with
    # (8,8,16,16) is 16/112 < 0.3, with (0,0,8,8) 0: kept
    got = window_boxes(fine, (16, 16), cfg)
    assert got == [Window(0, 0, 8, 8), Window(8, 8, 16, 16), Window(8, 2, 16, 10)]
    # a confident map (nothing under 0.9 x max) proposes nothing
    assert window_boxes(torch.ones(8, 8), (16, 16), cfg) == []
    # an image side under the model size: windows of that side (the deviation)
    assert window_boxes(fine, (16, 6), cfg)[0] == Window(0, 0, 6, 8)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8, :8] = True
    assert mixed(got, mask) == []  # all foreground, all background, all background
    mask[12, 12] = True  # inside (8, 8, 16, 16) only
    assert mixed(got, mask) == [Window(8, 8, 16, 16)]


def test_paste_averages_overlaps_and_keeps_the_rest():
    base = torch.full((4, 6), 0.3)
    out = paste([torch.ones(2, 4), torch.zeros(2, 4)], [Window(0, 0, 4, 2), Window(2, 0, 6, 2)], base)
    expected = base.clone()
    expected[:2, :2], expected[:2, 2:4], expected[:2, 4:] = 1.0, 0.5, 0.0
    assert torch.equal(out, expected)


def _sample(seed=0, h=48, w=40):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    probs = torch.zeros(3, h, w)
    probs[0] = 0.5
    probs[1, 5:30, 4:25] = 0.9
    probs[2, 20:44, 18:38] = 0.95
    return SimpleNamespace(id=f"img{seed}", image=image), ClassProbs(torch.tensor([0, 4, 9]), probs)


def test_batches_equal_one_at_a_time_and_classes_do_not_interact():
    sample, probs = _sample()
    one = SegRefiner(model_size=16, batch_max=1).refine(sample, probs, None)
    many = SegRefiner(model_size=16, batch_max=32).refine(sample, probs, None)
    torch.testing.assert_close(one.probs, many.probs, atol=1e-5, rtol=0)
    # a class's result does not depend on the other classes in its batch (classes apart)
    sample2, probs2 = _sample(1)
    probs2.probs[2] = 0
    probs2.probs[2, 36:46, 30:40] = 0.95
    both = SegRefiner(model_size=16).refine(sample2, probs2, None)
    first = SegRefiner(model_size=16).refine(sample2, ClassProbs(probs2.class_ids[:2], probs2.probs[:2]), None)
    torch.testing.assert_close(both.probs[1], first.probs[1], atol=1e-5, rtol=0)


def test_refiner_changes_masks_and_states_its_early_exit():
    sample, probs = _sample()
    out = SegRefiner(model_size=16).refine(sample, probs, None)
    assert out.probs.shape == probs.probs.shape and not torch.equal(out.labels(), probs.labels())
    torch.testing.assert_close(out.probs[0], 1 - out.probs[1:].max(0).values)
    again = SegRefiner(model_size=16).refine(sample, probs, None)
    assert torch.equal(out.probs, again.probs)  # seeded by (seed, image id, class)
    small = probs.probs.clone()
    small[2] = 0
    small[2, 0:10, 30:40] = 0.95  # 100 px <= 128: the release returns an empty mask
    out = SegRefiner(model_size=16).refine(sample, ClassProbs(probs.class_ids, small), None)
    assert not (out.labels() == 9).any()
    assert any("at most 128 px removed" in n for n in out.notes)


def test_a_refined_value_of_exactly_one_half_is_foreground_as_released(monkeypatch):
    """The release thresholds its soft mask with >= 0.5 (`semantic.py`'s global_mask and its
    output); the label map must agree at the boundary value and around it."""
    import strategies.refiners.segrefiner as segrefiner

    sample, probs = _sample()
    fg = [c for _, c in probs.foreground() if bool((probs.labels() == c).any())]
    values = torch.tensor([0.5, np.nextafter(np.float32(0.5), np.float32(0)), 0.7, 0.2, 0.5000001], dtype=torch.float32)
    soft = values[torch.arange(64 * 64) % len(values)].reshape(1, 64, 64).expand(len(fg), -1, -1).clone()
    soft[1:] = 0.0  # one class carries the values, the others are empty
    h, w = probs.probs.shape[1:]
    monkeypatch.setattr(segrefiner, "refine_semantic", lambda *a, **k: (soft[:, :h, :w], []))
    out = SegRefiner(model_size=16).refine(sample, probs, None)
    released = soft[0, :h, :w] >= 0.5  # the release's binary mask
    assert released.sum() > 0 and torch.equal(out.labels() == fg[0], released)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="multiple of 8"):
        SegRefiner(model_size=18)
    with pytest.raises(ConfigError, match="must match the network's learned embedding"):
        SegRefiner(timesteps=4)
