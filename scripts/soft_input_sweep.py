"""How many labels G4Seg changes on hard label-PNG coarse masks, per softening temperature.

    python scripts/soft_input_sweep.py                     # the 16 bundled real images, tiny models
    python scripts/soft_input_sweep.py --temperatures 2 8 --root /data/VOC2012 --limit 50

Coarse masks: the ground truth degraded to initial IoUs of 40-95 %, saved as label PNGs (the
common pseudo-label case: 0/1 probabilities). It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datamodules import CoarseFromFiles, SyntheticDegradation, VOCFolderDataModule  # noqa: E402
from g4seg.run.module import G4SegModule, StrategySpec  # noqa: E402
from strategies.injectors import AttentionInjection  # noqa: E402
from strategies.refiners import Correspondence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "data" / "real" / "voc2012"))
    parser.add_argument("--temperatures", type=float, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default="tiny", help="diffusion model of the EMI injector")
    parser.add_argument("--clip", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        degraded = VOCFolderDataModule(args.root, coarse=SyntheticDegradation(iou_range=(40, 95), soften_sigma=0),
                                       limit=args.limit)  # fmt: skip
        degraded.setup()
        for i in range(len(degraded.dataset)):
            s = degraded.dataset[i]
            Image.fromarray(s.coarse.labels().numpy().astype(np.uint8)).save(Path(folder) / f"{s.id}.png")
        dm = VOCFolderDataModule(args.root, coarse=CoarseFromFiles(folder), limit=args.limit)
        dm.setup()
        specs = [StrategySpec(f"T={t:g}", [Correspondence(clip=args.clip, temperature=t)], "emi") for t in args.temperatures]
        module = G4SegModule(specs, {"emi": AttentionInjection(model=args.model)}, dm.class_names)
        changed = {s.name: 0 for s in specs}
        total = 0
        for i in range(len(dm.dataset)):
            [result] = module.predict_step([dm.dataset[i]])
            total += result.labels["baseline"].numel()
            for s in specs:
                changed[s.name] += int((result.labels[s.name] != result.labels["baseline"]).sum())
    print(f"{len(dm.dataset)} images, {total:,} pixels, label-PNG coarse masks")
    for name, n in changed.items():
        print(f"{name:>8}: {n:>9,} label pixels changed ({100 * n / total:.2f} %)")


if __name__ == "__main__":
    main()
