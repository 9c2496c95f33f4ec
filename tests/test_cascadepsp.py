"""CascadePSP: official checkpoint layout, global/local inference, training, refiner."""

from __future__ import annotations

import sys

import pytest
import torch

from helpers import ROOT
from strategies.refiners import CascadePSP
from g4seg.models.cascadepsp import RefinementNetwork, load_official
from g4seg.models.tiny import tiny_cascadepsp as tiny_network
from strategies.refiners.cascadepsp import inference
from strategies.refiners.cascadepsp.inference import crop_grid, refine_masks

# (name, shape) read off the published code (segmentation_refinement/models/psp/*.py):
# ResNet-50 with a 6-channel conv1, PSP(2048 -> 1024, bins 1,2,3,6), PSPUpsample(1024, 1024+256, 512),
# (512, 512+64, 256), (256, 256+3, 32), final_28/final_56 (1x1 to 32, 1x1 to 1), final_11 (35 -> 32), final_21.
PUBLISHED = {
    "feats.conv1.weight": (64, 6, 7, 7),
    "feats.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "feats.layer2.3.conv3.weight": (512, 128, 1, 1),
    "feats.layer3.5.conv2.weight": (256, 256, 3, 3),
    "feats.layer3.0.downsample.1.running_var": (1024,),
    "feats.layer4.2.bn3.weight": (2048,),
    "psp.stages.3.1.weight": (2048, 2048, 1, 1),
    "psp.bottleneck.weight": (1024, 10240, 1, 1),
    "psp.bottleneck.bias": (1024,),
    "up_1.conv.0.weight": (1280,),
    "up_1.conv.2.weight": (512, 1280, 3, 3),
    "up_1.conv2.5.weight": (512, 512, 3, 3),
    "up_1.shortcut.weight": (512, 1024, 1, 1),
    "up_2.conv.2.weight": (256, 576, 3, 3),
    "up_3.conv.2.weight": (32, 259, 3, 3),
    "up_3.shortcut.weight": (32, 256, 1, 1),
    "final_28.0.weight": (32, 1024, 1, 1),
    "final_28.2.weight": (1, 32, 1, 1),
    "final_56.0.weight": (32, 512, 1, 1),
    "final_11.weight": (32, 35, 1, 1),
    "final_21.weight": (1, 32, 1, 1),
}


def test_official_checkpoint_layout_loads_strictly(tmp_path):
    net = RefinementNetwork()
    state = net.state_dict()
    for name, shape in PUBLISHED.items():
        assert tuple(state[name].shape) == shape, name
    assert sum(k.startswith("feats.layer") and k.endswith("conv1.weight") for k in state) == 16  # 3+4+6+3 blocks
    # as released: saved from nn.DataParallel, so every key has a "module." prefix
    official = {f"module.{k}": torch.randn_like(v.float()).to(v.dtype) for k, v in state.items()}
    path = tmp_path / "model"
    torch.save(official, path)
    refiner = CascadePSP(weights=str(path))
    assert torch.equal(refiner.net.state_dict()["psp.bottleneck.weight"], official["module.psp.bottleneck.weight"])
    assert not refiner.random_weights
    del official["module.final_21.bias"]
    torch.save(official, path)
    with pytest.raises(RuntimeError, match="final_21.bias"):
        load_official(RefinementNetwork(), str(path))


def test_missing_checkpoint_says_where_to_get_it():
    with pytest.raises(FileNotFoundError, match="release v1.0 of hkchengrex/CascadePSP"):
        CascadePSP(weights="/nonexistent/cascadepsp/model")


def test_crops_cover_the_image():
    for h, w, L in [(333, 500, 128), (500, 334, 96), (100, 80, 900), (224, 224, 224)]:
        cover = torch.zeros(h, w, dtype=torch.bool)
        for c in crop_grid(h, w, L):
            assert 0 <= c.y0 < c.y1 <= h and 0 <= c.x0 < c.x1 <= w
            assert c.y1 - c.y0 == min(L, h) and c.x1 - c.x0 == min(L, w)
            cover[c.y0 : c.y1, c.x0 : c.x1] = True
        assert cover.all()


def test_global_and_local_sizes_and_fast_skips_local(monkeypatch):
    net = tiny_network().eval()
    image = torch.randint(0, 255, (150, 230, 3), dtype=torch.uint8)
    masks = torch.zeros(2, 150, 230, dtype=torch.bool)
    masks[0, 30:110, 40:150] = True
    masks[1, :, 150:] = True
    calls = []
    real_local = inference.local_step
    monkeypatch.setattr(inference, "local_step", lambda *a: calls.append(1) or real_local(*a))
    out = refine_masks(net, image, masks, L=96)
    assert out.shape == (2, 150, 230) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert calls == [1]
    fast = refine_masks(net, image, masks, L=96, fast=True)
    assert fast.shape == (2, 150, 230) and calls == [1]
    _, crops_run = real_local(net, torch.zeros(1, 3, 150, 230), {"pred_224": torch.rand(1, 1, 96, 147),
                                                                 "pred_56_2": torch.rand(1, 1, 96, 147)}, 96)
    assert 0 < crops_run <= len(crop_grid(150, 230, 96))


def test_training_lowers_the_loss_on_real_images(tmp_path, real_voc):
    import json
    import subprocess

    proc = subprocess.run([
        sys.executable, "scripts/train_cascadepsp.py", "--root", str(real_voc), "--tiny", "--max_steps", "25",
        "--batch_size", "4", "--crop", "96", "--lr", "1e-3", "--out", str(tmp_path), "--accelerator", "cpu", "--devices", "1",
    ], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"CascadePSP tiny held-out loss: {result['before']:.4f} -> {result['after']:.4f}")
    assert result["after"] < result["before"]
    refiner = CascadePSP(weights=result["checkpoint"], base=8, layers=(1, 1, 1, 1), L=96)
    assert not refiner.random_weights


# --- the official package (pip: segmentation-refinement) as the oracle ---------------------------

def _official():
    return pytest.importorskip("segmentation_refinement.eval_helper", reason="pip install segmentation-refinement")


def _official_inputs(image: torch.Tensor, mask: torch.Tensor):
    """Exactly what segmentation_refinement.main.Refiner.refine feeds its helpers."""
    import numpy as np
    from torchvision import transforms

    im = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(transforms.ToTensor()(image.numpy()))
    seg = transforms.Normalize([0.5], [0.5])(transforms.ToTensor()((mask.numpy() > 0).astype(np.uint8) * 255))
    return im[None], seg[None]


def _balanced(net: RefinementNetwork, image: torch.Tensor, mask: torch.Tensor, L: int) -> RefinementNetwork:
    """Random weights predict (almost) one class everywhere, and then the 0.1/0.9 rule skips
    every crop; shift the final bias so about half the pixels are foreground."""
    with torch.no_grad():
        im, seg = _official_inputs(image, mask)
        logits = inference.global_step(net, im, seg, L)["pred_224"].logit(eps=1e-6)
        net.final_21.bias -= logits.median()
    return net


@pytest.fixture(scope="module")
def real_pair(demo_root):
    from datamodules.io import read_image, read_label_map

    sid = "2007_000129"
    image = torch.from_numpy(read_image(demo_root / "JPEGImages" / f"{sid}.jpg"))
    gt = torch.from_numpy(read_label_map(demo_root / "SegmentationClass" / f"{sid}.png", 21, image.shape[:2]))
    return image, gt


def test_network_equals_official_refinement_module():
    pspnet = pytest.importorskip("segmentation_refinement.models.psp.pspnet")
    torch.manual_seed(0)
    official = pspnet.RefinementModule().eval()
    ours = RefinementNetwork().eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    x, seg = torch.randn(1, 3, 64, 80), torch.rand(1, 1, 64, 80) * 2 - 1
    with torch.no_grad():
        a, b = official(x, seg), ours(x, seg)
        for key in ("pred_224", "pred_28_3", "pred_56_2", "pred_28_2", "pred_56"):
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
        # the local step's call: inter_s8 given, inter_s4 None
        a, b = official(x, seg, seg * 0.5), ours(x, seg, seg * 0.5)
        torch.testing.assert_close(b["pred_224"], a["pred_224"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("L,fast", [(96, False), (128, False), (96, True), (700, True)])
def test_whole_procedure_equals_official_functions(real_pair, L, fast):
    helper = _official()
    image, gt = real_pair
    mask = gt == int(torch.unique(gt[(gt != 0) & (gt != 255)])[0])
    net = _balanced(tiny_network().eval(), image, mask, L)
    im, seg = _official_inputs(image, mask)
    with torch.no_grad():
        want = (helper.process_im_single_pass if fast else helper.process_high_res_im)(net, im, seg, L)[0, 0]
    got = refine_masks(net, image, mask[None], L=L, fast=fast)[0]
    assert got.shape == want.shape
    frac = float((want > 0.5).float().mean())
    assert 0.05 < frac < 0.95, f"the local step was barely exercised ({frac:.2f} foreground)"
    torch.testing.assert_close(got, want.clamp(0, 1), rtol=0, atol=1e-5)
    iou = float(((got > 0.5) & (want > 0.5)).sum() / ((got > 0.5) | (want > 0.5)).sum())
    print(f"L={L} fast={fast}: max |ours - official| = {float((got - want).abs().max()):.2e}, mask IoU {iou:.4f}")


def test_local_step_runs_crops_and_decides_per_mask(real_pair):
    """Two masks in one batch: each crop is run for the masks it suits, as two batches of one would."""
    image, gt = real_pair
    image, gt = image[150:350, 60:300].contiguous(), gt[150:350, 60:300].contiguous()  # 200 x 240: few crops
    classes = [int(c) for c in torch.unique(gt) if int(c) not in (0, 255)]
    masks = torch.stack([gt == c for c in classes] + [torch.ones_like(gt, dtype=torch.bool)])
    net = _balanced(tiny_network().eval(), image, masks[0], 96)
    together = refine_masks(net, image, masks, L=96)
    alone = torch.stack([refine_masks(net, image, m[None], L=96)[0] for m in masks])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
