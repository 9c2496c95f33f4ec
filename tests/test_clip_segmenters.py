"""CLIP segmenters in the harness (SCLIP, ClearCLIP) on a tiny random CLIP: the last block
against the methods' equations written here in plain torch, the sliding window, the
probabilities, and a whole `g4seg predict` run on 1 and 2 processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import cli, read_metrics
from datamodules import SCLIP, ClearCLIP, MaskCLIP, VOCFolderDataModule
from datamodules.clip_segmenters import sliding_windows


def last_block_reference(block, x, method: str) -> torch.Tensor:
    """SCLIP's custom_attn(csa=True) / ClearCLIP's q-q attention / MaskCLIP's value path, from the raw weights."""
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    heads, d = block.attn.num_heads, x.shape[-1]
    hd = d // heads
    y = torch.nn.functional.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    q, k, v = (y @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(3))
    if method == "maskclip":  # every projected token is its own output: no query-key mixing
        x = x + v @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        return x + block.mlp(block.ln_2(x))
    split = lambda t: t.reshape(t.shape[0], -1, heads, hd).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    if method == "sclip":
        a = torch.softmax(q @ q.transpose(-1, -2) / hd**0.5, -1) + torch.softmax(k @ k.transpose(-1, -2) / hd**0.5, -1)
    else:
        a = torch.softmax(q @ q.transpose(-1, -2) / hd**0.5, -1)
    out = (a @ v).permute(0, 2, 1, 3).reshape(x.shape) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    if method == "clearclip":
        return out
    x = x + out
    return x + block.mlp(block.ln_2(x))


@pytest.mark.parametrize("cls,method", [(SCLIP, "sclip"), (ClearCLIP, "clearclip"), (MaskCLIP, "maskclip")])
def test_patch_features_equal_the_methods_equations(cls, method):
    seg = cls(pipeline="sclip") if cls is MaskCLIP else cls()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 72, 96)
    with torch.no_grad():
        got = seg.patch_features(x)
        v = seg.model.visual
        tokens = seg.tokens_before_last_block(x)
        ref = last_block_reference(v.transformer.resblocks[-1], tokens, method)
        ref = torch.nn.functional.normalize((v.ln_post(ref) @ v.proj)[:, 1:], dim=-1).reshape(2, 9, 12, -1)
    assert got.shape == (2, 9, 12, 16)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_sliding_windows_cover_odd_images_and_one_window_equals_no_sliding():
    for h, w in [(337, 505), (224, 300), (100, 90)]:
        cover = np.zeros((h, w), int)
        for y1, y2, x1, x2 in sliding_windows(h, w, 224, 112):
            assert y2 - y1 == min(224, h) and x2 - x1 == min(224, w)
            cover[y1:y2, x1:x2] += 1
        assert cover.min() >= 1
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (70, 91, 3), dtype=np.uint8)
    seg, whole = SCLIP(short_side=70), SCLIP(short_side=70, slide_crop=0)
    text = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    torch.testing.assert_close(seg.similarities(image, text), whole.similarities(image, text), rtol=0, atol=1e-6)


@pytest.mark.parametrize("labels", ["image", "all"])
def test_probabilities_and_label_sets(demo_root, labels):
    dm = VOCFolderDataModule(str(demo_root), coarse=SCLIP(labels=labels, names="voc21_sclip.txt"), limit=3)
    dm.setup()
    samples = [dm.dataset[i] for i in range(3)]
    assert all(s.coarse is None for s in samples), "a model producer does not run in the dataset"
    for s, p in zip(samples, dm.coarse_producer.produce(samples)):
        assert float(p.probs.min()) >= 0 and float(p.probs.max()) <= 1
        torch.testing.assert_close(p.probs.sum(0), torch.ones(s.size), rtol=0, atol=1e-5)
        assert int(p.class_ids[0]) == 0
        gt = {int(c) for c in torch.unique(s.gt)} - {0, 255}
        if labels == "image":
            assert set(p.class_ids.tolist()) == gt | {0}
        assert set(torch.unique(p.labels()).tolist()) <= set(p.class_ids.tolist())


def test_bad_class_name_files(tmp_path, demo_root):
    dm = VOCFolderDataModule(str(demo_root), coarse=SCLIP(names="nope.txt"), limit=1)
    dm.setup()
    with pytest.raises(ValueError, match="nope.txt: class-name file not found"):
        dm.coarse.produce([dm.dataset[0]])
    short = tmp_path / "short.txt"
    short.write_text("background\naeroplane\n")
    dm = VOCFolderDataModule(str(demo_root), coarse=SCLIP(names=str(short)), limit=1)
    dm.setup()
    with pytest.raises(ValueError, match="2 lines for a dataset of 21 classes"):
        dm.coarse.produce([dm.dataset[0]])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n".join(["background", ""] + ["x"] * 19) + "\n")
    dm = VOCFolderDataModule(str(demo_root), coarse=SCLIP(names=str(blank)), limit=1)
    dm.setup()
    with pytest.raises(ValueError, match="line 2 has no class name"):
        dm.coarse.produce([dm.dataset[0]])


def test_sclip_coarse_masks_through_predict_on_one_and_two_processes(tmp_path):
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1},
        "data": {"class_path": "datamodules.VOCFolderDataModule", "init_args": {
            "root": "data/demo/voc2012", "classes": "voc", "limit": 3, "batch_size": 1,
            "coarse": {"class_path": "datamodules.SCLIP", "init_args": {"clip": "tiny", "names": "voc21_sclip.txt"}}}},
        "model": {"injectors": {"emi": {"class_path": "strategies.injectors.AttentionInjection", "init_args": {"model": "tiny"}}},
                  "strategies": [
                      {"name": "identity", "refiners": [{"class_path": "strategies.refiners.Identity"}]},
                      {"name": "densecrf", "refiners": [{"class_path": "strategies.refiners.DenseCRF"}]},
                      {"name": "g4seg", "injector": "emi", "refiners": [{"class_path": "strategies.refiners.Correspondence"}]}]},
    }  # fmt: skip
    path = tmp_path / "sclip.yaml"
    path.write_text(json.dumps(config))
    code, _, err = cli("predict", "--config", str(path), "--output_dir", str(tmp_path / "one"))
    assert code == 0, err[-3000:]
    import subprocess
    import sys

    from helpers import ROOT

    proc = subprocess.run([sys.executable, "-m", "g4seg.cli", "predict", "--config", str(path), "--output_dir",
                           str(tmp_path / "two"), "--trainer.devices", "2", "--trainer.strategy", "ddp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert one["num_samples"] == 3 and set(one["strategies"]) == {"identity", "densecrf", "g4seg"}
    for exact in ("identity", "densecrf"):  # no generated image involved: identical to the last digit
        assert one["strategies"][exact] == two["strategies"][exact]
    assert one["strategies"]["identity"]["gain"] == 0


def test_producer_runs_in_the_module_on_its_device_not_in_dataloader_workers(demo_root, monkeypatch):
    """With a worker process loading the data, SCLIP still runs in this process, batched,
    as a submodule of the LightningModule (so Lightning moves it with the module)."""
    import os

    import lightning as L

    from datamodules.clip_segmenters import CLIPSegmenter
    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.refiners import Identity

    calls = []
    real = CLIPSegmenter.produce
    monkeypatch.setattr(CLIPSegmenter, "produce", lambda self, s: calls.append((os.getpid(), len(s))) or real(self, s))
    dm = VOCFolderDataModule(str(demo_root), coarse=SCLIP(names="voc21_sclip.txt"), limit=4, batch_size=2, num_workers=1)
    module = G4SegModule([StrategySpec("identity", [Identity()])])
    results = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).predict(module, dm)
    assert calls == [(os.getpid(), 2), (os.getpid(), 2)]
    assert module.producer is dm.coarse and any(m is dm.coarse for m in module.modules())
    assert all(r.counts for batch in results for r in batch)


def test_missing_clip_weights_are_one_error_before_any_work(tmp_path):
    from helpers import error_line

    code, _, err = cli("predict", "--config", "configs/paper/tiny/table1_tsss.yaml", "--output_dir", str(tmp_path / "o"),
                       "--data.init_args.coarse.init_args.clip", "ViT-B-16",
                       "--data.init_args.coarse.init_args.pretrained", "/nonexistent/ViT-B-16.bin")  # fmt: skip
    assert error_line(code, err).startswith("g4seg: error: 1 files or folders this config names do not exist")
    assert "  /nonexistent/ViT-B-16.bin  (data.init_args.coarse.init_args.pretrained)" in err
    assert "open_clip.create_model('ViT-B-16', pretrained='openai'" in err
    assert not (tmp_path / "o").exists()


def test_clip_weights_of_another_architecture_are_one_error(tmp_path):
    from helpers import error_line
    from g4seg.models.tiny import tiny_clip

    torch.save(tiny_clip().state_dict(), tmp_path / "tiny.pt")
    code, _, err = cli("predict", "--config", "configs/paper/tiny/table1_tsss.yaml", "--output_dir", str(tmp_path / "o"),
                       "--data.init_args.coarse.init_args.clip", "ViT-B-16",
                       "--data.init_args.coarse.init_args.pretrained", str(tmp_path / "tiny.pt"))  # fmt: skip
    line = error_line(code, err)
    assert line.startswith(f"g4seg: error: {tmp_path / 'tiny.pt'}: cannot load as open_clip ViT-B-16 "
                           "(weights of another architecture?)")  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("file, preset", [("voc21_sclip.txt", "voc"), ("context60_sclip.txt", "context"),
                                          ("coco_object_sclip.txt", "coco_object")])  # fmt: skip
def test_bundled_names_files_fit_their_dataset(file, preset):
    from g4seg.classes import PRESETS, prompt_name
    from datamodules.clip_segmenters import read_names

    names = read_names(file, PRESETS[preset])
    assert len(names) == len(PRESETS[preset])
    assert "sky" in names[0] or names[0] == ["background"]  # background words on line 0
    # every class line names that class: the dataset's name or (SCLIP's VOC wording) a known synonym
    synonyms_of = {"boat": "ship", "diningtable": "table", "tvmonitor": "tv monitor"}
    for class_name, synonyms in zip(PRESETS[preset][1:], names[1:]):
        assert {class_name, prompt_name(class_name), synonyms_of.get(class_name)} & set(synonyms), (class_name, synonyms)


def test_clip_weights_are_built_with_the_activation_they_were_trained_with(tmp_path):
    """open_clip builds "ViT-B-16" with GELU whatever the weights; OpenAI CLIP (and SCLIP,
    ClearCLIP on it) use QuickGELU. open_clip's own pretrained metadata is the oracle."""
    import json as _json

    import open_clip
    from open_clip.transformer import QuickGELU

    from g4seg.models.clip import load_clip, trained_with_quick_gelu

    assert trained_with_quick_gelu("ViT-B-16", "openai") is open_clip.get_pretrained_cfg("ViT-B-16", "openai")["quick_gelu"] is True
    assert trained_with_quick_gelu("ViT-B-16", "laion2b_s34b_b88k") is False
    hub_file = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "open_clip_model.safetensors"
    assert trained_with_quick_gelu("ViT-B-16", str(hub_file)) is True  # the openai tag's hub repository
    unknown = tmp_path / "mine.pt"
    unknown.write_bytes(b"not a release")
    assert trained_with_quick_gelu("ViT-B-16", str(unknown)) is None

    # weights saved to a file load with the activation asked for (a small architecture registered for the test)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "g4seg-test-vit.json").write_text(_json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}))  # fmt: skip
    open_clip.add_model_config(tmp_path / "cfg")
    weights = tmp_path / "vit.pt"
    torch.save(open_clip.create_model("g4seg-test-vit").state_dict(), weights)

    def activations(model):
        return {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}

    assert activations(load_clip("g4seg-test-vit", str(weights), quick_gelu=True)) == {"QuickGELU"}
    assert activations(load_clip("g4seg-test-vit", str(weights), quick_gelu=False)) == {"GELU"}
    with pytest.warns(UserWarning, match="not a release open_clip knows"):
        assert activations(load_clip("g4seg-test-vit", str(weights))) == {"GELU"}
