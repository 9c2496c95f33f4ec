"""The G4Seg pipeline through `g4seg predict`: every injector, chained refiners, DDP."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from helpers import cli, demo_with, read_metrics, run_cli

ARGS = ["predict", "--config", "configs/demo.yaml", "--data.init_args.limit", "2", "--save_generated", "true"]


def test_every_injector_end_to_end_and_same_images_under_ddp(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    code, stdout, stderr = cli(*ARGS, "--output_dir", str(one))
    assert code == 0 and "random (untrained) weights" in stdout, stderr[-3000:]
    metrics = read_metrics(one)
    assert set(metrics["strategies"]) == {"identity", "densecrf", "cascadepsp", "g4seg_emi", "g4seg_emi+crf",
                                          "g4seg_controlnet", "segrefiner", "sam", "g4seg_emi+sam"}  # fmt: skip
    assert metrics["random_weights"] == ["cascadepsp", "g4seg_controlnet", "g4seg_emi", "g4seg_emi+crf", "g4seg_emi+sam", "sam", "segrefiner"]
    gen_one = {p.relative_to(one): p.read_bytes() for p in (one / "generated").rglob("*.png")}
    assert {p.parts[1] for p in gen_one} == {"emi", "controlnet"}
    assert len(gen_one) == 2 * 4  # 2 samples with 2 + 2 classes, two injectors
    for strategy in metrics["strategies"]:
        assert len(list((one / "masks" / strategy).glob("*.png"))) == 2

    run_cli(*ARGS, "--output_dir", str(two), "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.accelerator", "cpu")
    gen_two = {p.relative_to(two): p.read_bytes() for p in (two / "generated").rglob("*.png")}
    assert gen_two.keys() == gen_one.keys()
    # Same noise and inputs on any number of processes; only float rounding of differently
    # shaped batches remains (1 proc batches [0, 1]; 2 procs [0] and [1]).
    diffs = [np.abs(decode(gen_one[k]) - decode(gen_two[k])) for k in gen_one]
    worst, changed = max(int(d.max()) for d in diffs), float(np.mean([(d > 0).mean() for d in diffs]))
    print(f"generated images, 1 vs 2 processes: max difference {worst} grey level(s), {changed:.2%} of values")
    assert worst <= 1 and changed < 0.05
    two_metrics = read_metrics(two)
    assert two_metrics["num_samples"] == 2 and two_metrics["strategies"].keys() == metrics["strategies"].keys()
    for exact in ("identity", "densecrf", "cascadepsp", "segrefiner", "sam"):  # no generated images involved
        assert two_metrics["strategies"][exact] == metrics["strategies"][exact]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def test_label_png_coarse_masks_are_softened_and_g4seg_changes_labels(tmp_path, real_voc):
    """The common case: pseudo-label PNGs (hard 0/1). G4Seg must change labels and the run
    must say how it softened its input (report, metrics.json; settings in run.json)."""
    import json

    from datamodules import SyntheticDegradation, VOCFolderDataModule

    pngs = tmp_path / "coarse"
    pngs.mkdir()
    dm = VOCFolderDataModule(str(real_voc), coarse=SyntheticDegradation(iou_range=(40, 95), soften_sigma=0), limit=4)
    dm.setup()
    for i in range(4):
        sample = dm.dataset[i]
        Image.fromarray(sample.coarse.labels().numpy().astype(np.uint8)).save(pngs / f"{sample.id}.png")
    out = tmp_path / "run"
    config = demo_with(tmp_path, "identity", "g4seg_emi", "g4seg_emi+crf", "g4seg_controlnet")
    code, stdout, stderr = cli(
        "predict", "--config", config, "--data.init_args.root", str(real_voc), "--data.init_args.limit", "4",
        "--data.init_args.coarse", "datamodules.CoarseFromFiles", "--data.init_args.coarse.folder", str(pngs),
        "--data.init_args.coarse.soften_sigma", "0",  # jsonargparse would carry the demo's 3.0 over
        "--output_dir", str(out),
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    metrics = read_metrics(out)
    note = "input softened (signed-distance sigmoid, temperature 8 px)"
    for name in ("g4seg_emi", "g4seg_emi+crf", "g4seg_controlnet"):
        assert metrics["notes"][name] == {note: 4}
        assert f"NOTE: {name}: {note} on 4/4 samples." in stdout
    assert "identity" not in metrics.get("notes", {})
    changed = {}
    for name in ("g4seg_emi", "g4seg_controlnet", "identity"):
        changed[name] = sum(
            int((np.asarray(Image.open(p)) != np.asarray(Image.open(out / "masks" / "baseline" / p.name))).sum())
            for p in (out / "masks" / name).glob("*.png")
        )
    print(f"label pixels changed on 4 real images with label-PNG coarse masks: {changed}")
    assert changed["g4seg_emi"] > 0 and changed["g4seg_controlnet"] > 0 and changed["identity"] == 0
    run = json.loads((out / "run.json").read_text())
    g4seg = next(s for s in run["config"]["model"]["strategies"] if s["name"] == "g4seg_emi")
    assert g4seg["refiners"][0]["init_args"]["soften"] == "auto"
    assert g4seg["refiners"][0]["init_args"]["temperature"] == 8.0
