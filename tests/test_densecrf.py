"""DenseCRF on real images: it should pull boundary-degraded masks back onto image edges."""

from __future__ import annotations

import numpy as np
import torch

from datamodules import SyntheticDegradation, VOCFolderDataModule
from g4seg.run.module import G4SegModule, StrategySpec
from strategies.refiners import DenseCRF, Identity


def test_densecrf_raises_miou_on_boundary_degraded_real_masks(real_voc):
    coarse = SyntheticDegradation(iou_range=(50, 90), ops=["boundary"], soften_sigma=3.0)
    dm = VOCFolderDataModule(str(real_voc), coarse=coarse)
    dm.setup()
    module = G4SegModule(
        [StrategySpec("identity", [Identity()]), StrategySpec("crf", [DenseCRF()])], class_names=dm.class_names
    )
    module.setup("predict")
    for i in range(len(dm.dataset)):
        for result in module.predict_step([dm.dataset[i]]):
            module.metrics.update(result)
    m = module.metrics.compute(dm.class_names)["strategies"]
    gain = m["crf"]["gain"]
    print(f"DenseCRF on {len(dm.dataset)} real images: {m['crf']['miou_baseline']:.2f} -> "
          f"{m['crf']['miou_refined']:.2f} mIoU (gain {gain:+.2f})")
    assert m["identity"]["gain"] == 0
    assert gain > 0.5


def test_densecrf_keeps_shapes_and_distribution():
    rng = np.random.default_rng(0)
    from g4seg.types import ClassProbs, Sample

    p = torch.from_numpy(rng.dirichlet([1, 1, 1], (20, 30)).transpose(2, 0, 1).astype(np.float32))
    probs = ClassProbs(torch.tensor([0, 4, 7]), p)
    image = torch.from_numpy(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    sample = Sample("x", image, torch.zeros(20, 30, dtype=torch.long), ["c"] * 21, probs)
    out = DenseCRF(iterations=3).refine(sample, probs, None)
    assert out.probs.shape == p.shape and out.class_ids.tolist() == [0, 4, 7]
    assert torch.allclose(out.probs.sum(0), torch.ones(20, 30), atol=1e-4)
