"""Training examples for the segmentation ControlNet: one per (image, ground-truth class), made
exactly as the injector makes its jobs at run time, so the fine-tuned ControlNet sees at
training what it will see in a run:
- the image resized to resolution x resolution (OpenCV INTER_AREA), in [-1, 1];
- the class's ground-truth mask resized with nearest neighbours and painted in the class's
  nearest ADE20K palette colour, black elsewhere (`controlnet.class_colours`);
- the prompt "A photo of {class}" (the injector's template and prompt names).
`center_crop` instead resizes the shorter side and crops the centre (diffusers'
train_controlnet.py); the mask keeps nearest-neighbour resizing so its colours stay exact.

Order: example i of the (long) training sequence is pass i // n, position i % n of a seeded
permutation of the n examples, so the order does not depend on processes or workers; each
process takes every world_size-th example of it (`loader`), so a global batch holds the
same examples on any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules import VOCFolderDataModule
from datamodules.folder import FolderDataset, find_image, inside
from datamodules.io import read_label_map
from g4seg.classes import check_prompt, prompt_name
from g4seg.errors import ConfigError
from g4seg.seeding import stable_seed
from g4seg.types import IGNORE_INDEX

from ..controlnet import class_colours, condition_image
from .module import refuse_changes


@dataclass(frozen=True)
class Example:
    index: int  # into the folder's ids
    class_id: int


def resize_square(image: np.ndarray, mask: np.ndarray, size: int, center_crop: bool) -> tuple[np.ndarray, np.ndarray]:
    if center_crop:
        h, w = mask.shape
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
        y, x = (nh - size) // 2, (nw - size) // 2
        return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]
    return (cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))  # fmt: skip


class ConditionedExamples(Dataset):
    """dicts of pixel_values [3, R, R] in [-1, 1], conditioning [3, R, R] in [0, 1], prompt,
    key ("id#class", what the noise is seeded from)."""

    def __init__(self, folder: FolderDataset, resolution: int, prompt: str, center_crop: bool = False,
                 shuffle: bool = True, repeats: int = 1, seed: int = 0) -> None:  # fmt: skip
        self.folder, self.resolution, self.prompt, self.center_crop = folder, resolution, prompt, center_crop
        self.shuffle, self.repeats, self.seed = shuffle, repeats, seed
        self.examples = [Example(i, c) for i, sample_id in enumerate(folder.ids) for c in self.classes_of(sample_id)]
        if not self.examples:
            raise ConfigError(f"{folder.gt_dir}: no foreground class in the ground truth of {len(folder.ids)} images: nothing to train on")

    def classes_of(self, sample_id: str) -> list[int]:
        """The ground truth's foreground classes (the image is opened for its size only)."""
        image = inside(find_image(self.folder.image_dir, sample_id), self.folder.image_dir, sample_id)
        with Image.open(image) as im:
            size = im.size[::-1]
        gt = read_label_map(self.folder.gt_dir / f"{sample_id}.png", len(self.folder.class_names), size, "ground truth")
        return sorted(int(c) for c in np.unique(gt).tolist() if c not in (0, IGNORE_INDEX))

    def __len__(self) -> int:
        return len(self.examples) * self.repeats

    @lru_cache(maxsize=4)  # noqa: B019 - a handful of passes, per worker
    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.examples)))
        return np.random.default_rng(stable_seed(self.seed, "order", epoch)).permutation(len(self.examples)).tolist()

    def __getitem__(self, i: int) -> dict:
        n = len(self.examples)
        example = self.examples[self.order(i // n)[i % n]]
        sample = self.folder[example.index]
        name = sample.class_names[example.class_id]
        image, mask = resize_square(sample.image.numpy(), (sample.gt.numpy() == example.class_id).astype(np.uint8),
                                    self.resolution, self.center_crop)  # fmt: skip
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
        cond = condition_image(torch.from_numpy(np.ascontiguousarray(mask)).float()[None], class_colours([name]))[0]
        return {"pixel_values": pixels, "conditioning": cond, "prompt": self.prompt.format(prompt_name(name)),
                "key": f"{sample.id}#{example.class_id}"}  # fmt: skip


class RankStream(DistributedSampler):
    """Positions rank, rank + world, ... of a sequence of `length`, skipping the first `skip`
    of them (a DistributedSampler, so Lightning keeps it instead of injecting its own)."""

    def __init__(self, length: int, world: int, rank: int, skip: int = 0) -> None:
        self.length, self.world, self.rank, self.skip = length, world, rank, skip
        self.num_replicas, self.epoch, self.shuffle, self.drop_last = world, 0, False, False

    def __iter__(self):
        return iter(range(self.rank + self.world * self.skip, self.length, self.world))

    def __len__(self) -> int:
        return max(0, len(range(self.rank + self.world * self.skip, self.length, self.world)))

    def set_epoch(self, epoch: int) -> None:  # the order is the dataset's, by pass
        pass


def collate(items: list[dict]) -> dict:
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "conditioning": torch.stack([i["conditioning"] for i in items]),
            "prompt": [i["prompt"] for i in items], "key": [i["key"] for i in items]}  # fmt: skip


class ControlNetTrainingData(L.LightningDataModule):
    """A VOC-layout dataset's ground truth as ControlNet training examples.

    Args:
        root, classes, split, image_dir, gt_dir, ignore_zero, limit: as `VOCFolderDataModule`
            (split: the training ids, e.g. ImageSets/Segmentation/train.txt or train_aug.txt).
        val_split: ids file of the held-out images for the validation loss; without it, the
            last `val_count` ids of the split are held out (and not trained on).
        resolution: side of the training images (512 for SD 1.5; the tiny model: 128).
        prompt: the injector's template. center_crop: see the module docstring.
        batch_size: examples per process and step. repeats: passes over the examples in the
            training sequence (`max_steps` ends training first).
    """

    def __init__(self, root: str, classes: str | list[str] = "voc", split: str | None = None,
                 val_split: str | None = None, val_count: int = 8, image_dir: str = "JPEGImages",
                 gt_dir: str = "SegmentationClass", ignore_zero: bool = False, limit: int | None = None,
                 resolution: int = 512, prompt: str = "A photo of {}", center_crop: bool = False, batch_size: int = 4,
                 num_workers: int = 4, repeats: int = 10000, seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        if batch_size < 1 or num_workers < 0 or val_count < 0 or resolution < 8:
            raise ConfigError(f"ControlNetTrainingData needs batch_size >= 1, num_workers >= 0, val_count >= 0, "
                              f"resolution >= 8; got {batch_size}, {num_workers}, {val_count}, {resolution}")  # fmt: skip
        check_prompt(prompt, "data.prompt")
        self.source = VOCFolderDataModule(root, classes, None, split, image_dir, gt_dir, limit, ignore_zero=ignore_zero)
        self.val_source = (VOCFolderDataModule(root, classes, None, val_split, image_dir, gt_dir, ignore_zero=ignore_zero)
                           if val_split else None)  # fmt: skip
        self.val_count, self.resolution, self.prompt, self.center_crop = val_count, resolution, prompt, center_crop
        self.batch_size, self.num_workers, self.repeats, self.seed = batch_size, num_workers, repeats, seed
        self.train_ids: list[str] = []
        self.val_ids: list[str] = []
        self.train: ConditionedExamples | None = None
        self.val: ConditionedExamples | None = None

    def folder(self, ids: list[str]) -> FolderDataset:
        s = self.source
        return FolderDataset(s.root, s.class_names, None, ids, s.image_dir, s.gt_dir, ignore_zero=s.ignore_zero)

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        ids = self.source.list_ids()
        if self.val_source is not None:
            self.val_ids = self.val_source.list_ids()
            self.train_ids = [i for i in ids if i not in set(self.val_ids)]
        else:
            held = min(self.val_count, max(0, len(ids) - 1))
            self.train_ids, self.val_ids = ids[: len(ids) - held], ids[len(ids) - held:]
        if not self.train_ids:
            raise ConfigError(f"{self.source.root}: no training images left after holding out {len(self.val_ids)} for validation")
        self.train = ConditionedExamples(self.folder(self.train_ids), self.resolution, self.prompt, self.center_crop,
                                         shuffle=True, repeats=self.repeats, seed=self.seed)  # fmt: skip
        if self.val_ids:
            self.val = ConditionedExamples(self.folder(self.val_ids), self.resolution, self.prompt, self.center_crop,
                                           shuffle=False)  # fmt: skip

    def loader(self, data: Dataset, start_step: int = 0) -> DataLoader:
        """Our own rank split (Lightning's injected sampler would reshuffle training data): each
        process takes every world_size-th example of the sequence, from where `start_step`
        optimizer steps left it, so a resumed run sees what an uninterrupted one would."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        sampler = RankStream(len(data), world, rank, start_step * accumulate * self.batch_size)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, persistent_workers=self.num_workers > 0)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train, self.trainer.global_step if self.trainer is not None else 0)

    def val_dataloader(self):
        return self.loader(self.val) if self.val is not None else []

    def resume_settings(self) -> dict:
        """What fixes the example sequence and where a step leaves it (checked on resume)."""
        s, trainer = self.source, self.trainer
        world = (trainer.world_size * trainer.accumulate_grad_batches) if trainer is not None else 1
        return {"root": str(Path(s.root).resolve()), "classes": s.class_names, "split": s.split, "limit": s.limit,
                "ignore_zero": s.ignore_zero, "train_ids": self.train_ids, "resolution": self.resolution,
                "prompt": self.prompt, "center_crop": self.center_crop, "seed": self.seed,
                "global_batch": self.batch_size * world}  # fmt: skip

    def state_dict(self) -> dict:
        return {"settings": self.resume_settings()}

    def load_state_dict(self, state_dict: dict) -> None:
        refuse_changes("data", state_dict.get("settings", {}), self.resume_settings())

    def describe(self) -> dict:
        """What the ControlNet was trained on, for the JSON next to it."""
        s = self.source
        return {"root": str(Path(s.root).resolve()), "classes": s.class_names, "split": s.split,
                "ignore_zero": s.ignore_zero, "resolution": self.resolution, "prompt": self.prompt,
                "center_crop": self.center_crop, "train_ids": self.train_ids, "val_ids": self.val_ids,
                "train_examples": len(self.train.examples) if self.train else 0}  # fmt: skip
