"""Training CascadePSP with Lightning: perturbed-GT crops from any VOC-layout folder and
the official loss mix.

Coarse inputs are the ground-truth mask of one class degraded with the same machinery as
`SyntheticDegradation` (boundary warping, erosion/dilation, blobs) at a random strength,
as CascadePSP trains on perturbed masks. Loss, per output (full, 1/8, 1/4, 1/8 second
pass, 1/8 third pass, 1/4 second pass): CE * ce_weight + L1 * l1_weight + L2 * l2_weight,
plus grad_weight * L1 between Sobel edges of the full prediction and of the GT. The
defaults are the official hyper-parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from datamodules.coarse import DegradationFields, fill_ignored
from g4seg.errors import DataError
from g4seg.models.cascadepsp import RefinementNetwork, load_official
from g4seg.seeding import stable_seed
from g4seg.types import IGNORE_INDEX, Sample

OUTPUTS = ("224", "28", "56", "28_2", "28_3", "56_2")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return torch.sqrt((g**2).sum(1, keepdim=True) + 1e-8)


def cascadepsp_loss(
    out: dict[str, torch.Tensor],
    gt: torch.Tensor,
    ce_weight=(0.0, 1.0, 0.5, 1.0, 1.0, 0.5),
    l1_weight=(1.0, 0.0, 0.25, 0.0, 0.0, 0.25),
    l2_weight=(1.0, 0.0, 0.25, 0.0, 0.0, 0.25),
    grad_weight: float = 5.0,
) -> dict[str, torch.Tensor]:
    target = (gt > 0.5).float()
    parts = {}
    total = gt.new_zeros(())
    for i, name in enumerate(OUTPUTS):
        pred = out[f"pred_{name}"]
        loss = (
            ce_weight[i] * F.binary_cross_entropy_with_logits(out[f"out_{name}"], target)
            + l1_weight[i] * F.l1_loss(pred, gt)
            + l2_weight[i] * F.mse_loss(pred, gt)
        )
        parts[f"loss_{name}"] = loss
        total = total + loss
    parts["grad"] = F.l1_loss(sobel_magnitude(out["pred_224"]), sobel_magnitude(gt))
    parts["total"] = total + grad_weight * parts["grad"]
    return parts


class PerturbedCrops(Dataset):
    """(image, coarse, gt) crops: one per (image, foreground class) and epoch pass.

    Randomness comes from (seed, id, class, draw), so a given index is reproducible.
    """

    def __init__(self, samples: Sequence[Sample], crop: int = 224, seed: int = 0, repeats: int = 1) -> None:
        """`samples`: any dataset of Samples (their images and ground truth; coarse unused),
        e.g. datamodules' FolderDataset."""
        self.crop, self.seed, self.repeats = crop, seed, repeats
        self.pairs = {}
        self.items = []
        for index in range(len(samples)):
            sample = samples[index]
            gt = sample.gt.numpy()
            self.pairs[sample.id] = (sample.image.numpy(), fill_ignored(gt))
            self.items += [(sample.id, int(c)) for c in np.unique(gt) if c not in (0, IGNORE_INDEX)]
        if not self.items:
            raise DataError(f"no foreground objects to train on in {len(samples)} samples")

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def __getitem__(self, index: int):
        sample_id, class_id = self.items[index % len(self.items)]
        rng = np.random.default_rng(stable_seed(self.seed, sample_id, class_id, index // len(self.items)))
        image, gt = self.pairs[sample_id]
        mask = gt == class_id
        coarse = DegradationFields.draw(rng, mask).apply(mask, float(rng.uniform(0.2, 1.5)), ("boundary", "morph", "blobs"))
        h, w = mask.shape
        scale = self.crop / min(h, w) * rng.uniform(1.0, 1.5)
        size = (max(self.crop, round(w * scale)), max(self.crop, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        coarse = cv2.resize(coarse.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        ys, xs = np.nonzero(mask)  # crops centred near the object, as boundaries are what is learnt
        cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (size[1] // 2, size[0] // 2)
        y0 = int(np.clip(cy - self.crop // 2 + rng.integers(-self.crop // 4, self.crop // 4 + 1), 0, size[1] - self.crop))
        x0 = int(np.clip(cx - self.crop // 2 + rng.integers(-self.crop // 4, self.crop // 4 + 1), 0, size[0] - self.crop))
        window = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
        im = (image[window].astype(np.float32) / 255.0 - MEAN) / STD
        return (
            torch.from_numpy(im.transpose(2, 0, 1).copy()),
            torch.from_numpy(coarse[window].astype(np.float32)[None] * 2 - 1),
            torch.from_numpy(mask[window].astype(np.float32)[None]),
        )


class CascadePSPTraining(L.LightningModule):
    """Args:
        base, layers: network size (64, (3, 4, 6, 3) = official; 8, (1, 1, 1, 1) = tiny).
        init: optional official checkpoint to fine-tune from.
        lr, weight_decay: Adam (official 2.25e-4, 1e-4).
        milestones, gamma: learning rate x gamma at these steps (official 22500, 37500; 0.1).
    """

    def __init__(self, base: int = 64, layers=(3, 4, 6, 3), init: str | None = None, lr: float = 2.25e-4,
                 weight_decay: float = 1e-4, grad_weight: float = 5.0, milestones=(22500, 37500),
                 gamma: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net = RefinementNetwork(base, tuple(layers))
        if init:
            load_official(self.net, init)

    def training_step(self, batch, batch_idx):
        image, seg, gt = batch
        parts = cascadepsp_loss(self.net(image, seg), gt, grad_weight=self.hparams.grad_weight)
        self.log("loss", parts["total"], prog_bar=True, sync_dist=True)
        self.log("grad_loss", parts["grad"])
        return parts["total"]

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.hparams.milestones), self.hparams.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=False)
