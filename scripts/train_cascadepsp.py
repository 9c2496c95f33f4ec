"""Train the CascadePSP refinement network on any VOC-layout folder with Trainer.fit.

    python scripts/train_cascadepsp.py --root data/demo/voc2012 --tiny --max_steps 50 --out outputs/cpsp
    python scripts/train_cascadepsp.py --root /data/VOC2012 --devices 4 --strategy ddp --max_steps 45000

Prints the loss on a fixed held-out set of crops before and after training; checkpoints
(Lightning .ckpt, loadable by `strategies.refiners.CascadePSP(weights=...)`) go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from datamodules import VOCFolderDataModule  # noqa: E402
from datamodules.folder import FolderDataset  # noqa: E402
from strategies.refiners.cascadepsp.training import (  # noqa: E402
    CascadePSPTraining,
    PerturbedCrops,
    cascadepsp_loss,
    make_loader,
)


@torch.no_grad()
def held_out_loss(model: CascadePSPTraining, dataset: PerturbedCrops) -> float:
    """Mean loss in eval mode (running BN statistics) on fixed crops."""
    model.eval()
    losses = []
    for image, seg, gt in make_loader(dataset, batch_size=4, shuffle=False):
        losses.append(float(cascadepsp_loss(model.net(image, seg), gt)["total"]) * len(image))
    model.train()
    return sum(losses) / len(dataset)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--classes", default="voc")
    p.add_argument("--out", default="outputs/cascadepsp")
    p.add_argument("--tiny", action="store_true", help="base 8, layers 1,1,1,1 (tests, CPU)")
    p.add_argument("--init", help="official checkpoint to fine-tune from")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--lr", type=float, default=2.25e-4)
    p.add_argument("--max_steps", type=int, default=45000)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    L.seed_everything(args.seed, workers=True)
    size = dict(base=8, layers=(1, 1, 1, 1)) if args.tiny else dict(base=64, layers=(3, 4, 6, 3))
    model = CascadePSPTraining(**size, init=args.init, lr=args.lr)
    dm = VOCFolderDataModule(args.root, args.classes)
    samples = FolderDataset(dm.root, dm.class_names, None, dm.ids)  # images and GT only
    train = PerturbedCrops(samples, args.crop, seed=args.seed, repeats=1000)
    held = PerturbedCrops(samples, args.crop, seed=args.seed + 1)
    before = held_out_loss(model, held)
    trainer = L.Trainer(
        max_steps=args.max_steps, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        default_root_dir=args.out, logger=False, log_every_n_steps=10,
        callbacks=[ModelCheckpoint(dirpath=args.out, filename="cascadepsp-{step}", save_last=True)],
    )  # fmt: skip
    trainer.fit(model, make_loader(train, args.batch_size, args.num_workers))
    after = held_out_loss(model, held)
    result = {"before": before, "after": after, "checkpoint": str(Path(args.out) / "last.ckpt")}
    if trainer.is_global_zero:
        print(f"held-out loss on {len(held)} crops: before {before:.4f} -> after {after:.4f}")
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
