"""CLIP-ES's released CAM files, written exactly as its generate_cams_voc12.py writes them,
through scripts/prepare_coarse.py and the harness's file reader and clip_es CRF preset: the
label maps equal CLIP-ES's own eval_cam_with_crf.py procedure on the same files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from helpers import ROOT
from datamodules import CoarseFromFiles, SyntheticDegradation, VOCFolderDataModule
from strategies.refiners import DenseCRF
from test_densecrf import clip_es_reference


def write_like_clip_es(folder, real_voc, n=2):
    """{"keys": 0-based foreground indices, "attn_highres": float16 [K, H, W]} via np.save of
    a dict (a pickle), one per image, from degraded ground truth standing in for CAMs."""
    dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(30, 90), soften_sigma=6.0), limit=n)
    dm.setup()
    folder.mkdir()
    saved = {}
    for i in range(n):
        s = dm.dataset[i]
        keys = torch.tensor([int(c) - 1 for c in s.coarse.class_ids[1:]])
        cams = s.coarse.probs[1:]
        cams = (cams - cams.amin((1, 2), keepdim=True)) / (1e-7 + cams.amax((1, 2), keepdim=True))  # scale_cam_image
        np.save(folder / f"{s.id}.npy", {"keys": keys.numpy(), "attn_highres": cams.numpy().astype(np.float16)})
        saved[s.id] = (keys.numpy(), cams.numpy().astype(np.float16))
    return saved


def test_converted_clip_es_cams_give_clip_es_pseudo_labels(tmp_path, real_voc):
    saved = write_like_clip_es(tmp_path / "cams", real_voc)
    script = [sys.executable, "scripts/prepare_coarse.py", "clip-es", "--cams", str(tmp_path / "cams"), "--out",
              str(tmp_path / "npz")]  # fmt: skip
    refused = subprocess.run(script, cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --trust-pickle" in refused.stderr and not (tmp_path / "npz").exists()
    done = subprocess.run([*script, "--trust-pickle"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    dm = VOCFolderDataModule(str(real_voc), coarse=CoarseFromFiles(str(tmp_path / "npz")), limit=len(saved))
    dm.setup()
    crf = DenseCRF(preset="clip_es")
    for i in range(len(saved)):
        s = dm.dataset[i]
        keys, cams = saved[s.id]
        assert s.coarse.class_ids.tolist() == [0, *(keys + 1).tolist()]
        prob = clip_es_reference(s.files["image"], cams.astype(np.float32))
        want = np.pad(keys + 1, (1, 0))[prob.argmax(0)]  # CLIP-ES: label = keys[argmax]
        got = crf.refine(s, s.coarse, None).labels().numpy()
        assert np.array_equal(got, want), s.id


def test_a_file_that_is_not_clip_es_output_is_named(tmp_path):
    (tmp_path / "cams").mkdir()
    np.save(tmp_path / "cams" / "x.npy", {"keys": np.array([3]), "wrong": np.zeros((1, 4, 4))})
    done = subprocess.run([sys.executable, "scripts/prepare_coarse.py", "clip-es", "--cams", str(tmp_path / "cams"),
                           "--out", str(tmp_path / "npz"), "--trust-pickle"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (f"g4seg: error: {tmp_path}/cams/x.npy: not a CLIP-ES CAM file "
                                   "(a dict with 'keys' and 'attn_highres')")  # fmt: skip
