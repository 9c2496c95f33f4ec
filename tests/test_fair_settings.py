"""Each method with its released settings, and no class swap that silently keeps another
class's arguments."""

from __future__ import annotations

import pytest

from helpers import cli, error_line


def test_swapping_the_coarse_class_never_inherits_the_old_class_arguments(tmp_path):
    out = tmp_path / "run"
    line = error_line(*cli("predict", "--config", "configs/densecrf.yaml", "--output_dir", str(out),
                           "--data.init_args.coarse", "datamodules.CoarseFromFiles",
                           "--data.init_args.coarse.init_args.folder", str(tmp_path))[::2])  # fmt: skip
    assert line.startswith("g4seg: error: --data.init_args.coarse datamodules.CoarseFromFiles replaces "
                           "datamodules.SyntheticDegradation of configs/densecrf.yaml, whose soften_sigma: 3.0 would carry over")
    assert not out.exists()
    # setting it explicitly is what the user meant: accepted (the run then looks for the files)
    code, _, err = cli("predict", "--config", "configs/densecrf.yaml", "--output_dir", str(out),
                       "--data.init_args.coarse.class_path", "datamodules.CoarseFromFiles",
                       "--data.init_args.coarse.init_args.folder", str(tmp_path),
                       "--data.init_args.coarse.init_args.soften_sigma", "0")  # fmt: skip
    assert "coarse masks from CoarseFromFiles(folder=" in err and "soften_sigma=0.0" in err
    assert "no coarse mask for sample" in error_line(code, err)


def test_sclip_to_clearclip_refused_but_to_maskclip_keeps_the_shared_segmenter_keys(tmp_path):
    base = ["predict", "--config", "configs/paper/tiny/table1_tsss.yaml", "--data.init_args.limit", "1"]
    line = error_line(*cli(*base, "--output_dir", str(tmp_path / "a"), "--data.init_args.coarse", "datamodules.ClearCLIP")[::2])
    assert "replaces datamodules.SCLIP" in line and "names: voc21_sclip.txt" in line
    line = error_line(*cli(*base, "--output_dir", str(tmp_path / "b"), "--data.init_args.coarse", "datamodules.MaskCLIP")[::2])
    assert "set pipeline: sclip" in line
    code, _, err = cli(*base, "--output_dir", str(tmp_path / "c"), "--data.init_args.coarse", "datamodules.MaskCLIP",
                       "--data.init_args.coarse.init_args.pipeline", "sclip")  # fmt: skip
    assert code == 0, err[-2000:]
    assert 'coarse masks from MaskCLIP(pipeline="sclip", clip="tiny", names="voc21_sclip.txt"' in err


# mc-lan/ClearCLIP: ClearCLIPSegmentation(prob_thd=0.0, logit_scale=50, slide_stride=224, slide_crop=448);
# cfg_voc21.py prob_thd 0.5, cfg_context60.py 0.15, cfg_coco_object.py 0.4; Resize scale (2048, 448), keep_ratio
RELEASED = {"voc21": 0.5, "context60": 0.15, "coco_object": 0.4}


@pytest.mark.parametrize("release", sorted(RELEASED))
def test_clearclip_runs_with_its_released_settings(release):
    from datamodules import ClearCLIP

    seg = ClearCLIP(release=release)
    assert (seg.logit_scale, seg.slide_crop, seg.slide_stride, seg.short_side, seg.area_thd) == (50.0, 448, 224, 448, None)
    assert seg.prob_thd == RELEASED[release]
    assert seg.resolved()["prob_thd"] == RELEASED[release]


def test_clearclip_voc_names_are_its_own_file():
    from datamodules.clip_segmenters import read_names
    from g4seg.classes import PRESETS

    names = read_names("voc21_clearclip.txt", PRESETS["voc"])
    assert names[0] == ["background"] and names[4] == ["ship"] and names[11] == ["table"]  # cls_voc21.txt
