"""VOC-layout folders: `root/JPEGImages/<id>.jpg` and `root/SegmentationClass/<id>.png`."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from g4seg.classes import resolve_classes
from g4seg.errors import ConfigError
from g4seg.interfaces import CoarseProducer
from g4seg.types import IGNORE_INDEX, AlreadyDone, Sample

from .coarse import CoarseSource, SyntheticDegradation
from .io import DataError, read_image, read_label_map

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def safe_id(sample_id: str) -> bool:
    """A relative path with real parts: no absolute path, no '..', no empty or '.' part."""
    parts = sample_id.split("/")
    return bool(sample_id) and not sample_id.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def inside(path: Path, folder: Path, sample_id: str) -> Path:
    """`path`, refused when a linked directory on the way takes it out of `folder`. The file
    itself may be a link (the link farms `scripts/prepare_datasets.py` makes point into the
    original distribution)."""
    parent = path.parent.resolve()
    if not parent.is_relative_to(folder.resolve()):
        raise DataError(f"{path}: sample {sample_id!r} lies in {parent}, outside {folder} (a linked directory); "
                        "links out of the dataset's folders are not followed")  # fmt: skip
    return path.absolute()


def find_image(image_dir: Path, sample_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for variant in (suffix, suffix.upper()):
            path = image_dir / f"{sample_id}{variant}"
            if path.exists():
                return path
    raise DataError(f"{image_dir}: no image for sample {sample_id!r} (tried {', '.join(IMAGE_SUFFIXES)})")


class FolderDataset(Dataset):
    """Samples of a VOC-layout folder; yields `AlreadyDone` for ids finished in an earlier run.
    Coarse masks from files or degradation are made here; with a model producer (`coarse`
    None) the module's coarse stage makes them on its device."""

    def __init__(
        self,
        root: Path,
        class_names: list[str],
        coarse: CoarseSource | None,
        ids: list[str],
        image_dir: str = "JPEGImages",
        gt_dir: str = "SegmentationClass",
        skip_ids: frozenset[str] = frozenset(),
        ignore_zero: bool = False,
    ) -> None:
        self.root, self.class_names, self.coarse, self.ids = root, class_names, coarse, ids
        self.image_dir, self.gt_dir = root / image_dir, root / gt_dir
        self.skip_ids, self.ignore_zero = skip_ids, ignore_zero

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample | AlreadyDone:
        sample_id = self.ids[index]
        if sample_id in self.skip_ids:
            return AlreadyDone(sample_id)
        image_path = inside(find_image(self.image_dir, sample_id), self.image_dir, sample_id)
        gt_path = inside(self.gt_dir / f"{sample_id}.png", self.gt_dir, sample_id)
        digests: dict[str, str] = {}  # path -> SHA-256 of the bytes read, for the resume check
        image = read_image(image_path, digests)
        gt = read_label_map(gt_path, len(self.class_names), image.shape[:2], "ground truth", digests)
        if self.ignore_zero:  # ADE20K's 0 is "other", outside its 150 classes: not scored, never a label
            gt[gt == 0] = IGNORE_INDEX
        coarse = None
        if self.coarse is not None:
            coarse = self.coarse.make(sample_id, image, gt, len(self.class_names), self.class_names, digests)
        files = {"image": str(image_path), "gt": str(gt_path)}
        files.update({"coarse": path for path in digests if path not in files.values()})
        return Sample(
            id=sample_id,
            image=torch.from_numpy(image),
            gt=torch.from_numpy(gt),
            class_names=self.class_names,
            coarse=coarse,
            files=files,
            digests=digests,
        )


def collate_samples(batch: list) -> list:
    """Images differ in size, so a batch is a plain list of records."""
    return list(batch)


class VOCFolderDataModule(L.LightningDataModule):
    """Any dataset laid out like VOCdevkit, with coarse masks from files or degradation.

    Args:
        root: dataset folder (holds `image_dir` and `gt_dir`).
        classes: preset ("voc", "context", "coco_object", "ade20k"), a class file, or a list.
        coarse: where coarse masks come from: files or degradation (`CoarseFromFiles`,
            `SyntheticDegradation`, made in the dataset) or a model (`SCLIP`, ..., a
            `CoarseProducer` the module runs on its device).
        split: optional text file of sample ids, one a line (e.g. ImageSets/Segmentation/val.txt).
        limit: keep only the first `limit` ids (quick runs).
        batch_size: samples per predict step; diffusion injectors batch all their classes.
        ignore_zero: ground-truth 0 is not a class but unlabeled (ADE20K's "other"): it is
            ignored like 255 (mmseg's reduce_zero_label; the ids keep their numbers).
    """

    FILES_NEEDED = {"root": "a VOC-layout dataset folder (JPEGImages/, SegmentationClass/): python scripts/prepare_datasets.py --help"}

    def __init__(
        self,
        root: str,
        classes: str | list[str] = "voc",
        coarse: CoarseSource | None = None,
        split: str | None = None,
        image_dir: str = "JPEGImages",
        gt_dir: str = "SegmentationClass",
        limit: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        ignore_zero: bool = False,
    ) -> None:
        super().__init__()
        if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
            raise ConfigError(f"data.init_args.limit must be a whole number >= 1 (or null for all), got {limit!r}")
        if batch_size < 1:
            raise ConfigError(f"data.init_args.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data.init_args.num_workers must be >= 0, got {num_workers}")
        self.root = Path(root)
        self.class_names = resolve_classes(classes)
        self.coarse = coarse if coarse is not None else SyntheticDegradation()
        self.split, self.image_dir, self.gt_dir = split, image_dir, gt_dir
        self.limit, self.batch_size, self.num_workers = limit, batch_size, num_workers
        self.ignore_zero = ignore_zero
        self.skip_ids: frozenset[str] = frozenset()  # samples a resumed run already has (from its RunFolder)
        self.dataset: FolderDataset | None = None
        self._ids: list[str] | None = None

    def list_ids(self) -> list[str]:
        gt_dir = self.root / self.gt_dir
        if self.split is not None:
            split = Path(self.split)
            split = split if split.is_absolute() or split.exists() else self.root / split
            if not split.is_file():
                raise DataError(f"{split}: split file is missing")
            ids = [line.split()[0] for line in split.read_text().splitlines() if line.strip()]
        else:
            if not gt_dir.is_dir():
                raise DataError(f"{gt_dir}: ground-truth folder is missing (expected VOC layout under {self.root})")
            ids = sorted(p.stem for p in gt_dir.glob("*.png"))
        bad = [i for i in ids if not safe_id(i)]
        if bad:
            raise DataError(f"{self.split or gt_dir}: sample id {bad[0]!r} leaves the dataset folder (absolute, '..' or "
                            "empty parts); ids are paths relative to the image and ground-truth folders")  # fmt: skip
        seen: set[str] = set()
        duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
        if duplicates:
            raise DataError(f"{self.split}: sample ids listed more than once: {duplicates[:5]}; list each id once")
        if self.limit is not None:
            ids = ids[: self.limit]
        if not ids:
            raise DataError(f"{self.root}: dataset is empty (no ids from {self.split or gt_dir})")
        return ids

    @property
    def ids(self) -> list[str]:
        """The ids this run scores, in order (listed once per datamodule)."""
        if self._ids is None:
            self._ids = self.list_ids()
        return self._ids

    @property
    def coarse_producer(self) -> CoarseProducer | None:
        """The model that makes coarse masks in the module's coarse stage, if any."""
        return self.coarse if isinstance(self.coarse, CoarseProducer) else None

    def setup(self, stage: str | None = None) -> None:
        in_dataset = None if self.coarse_producer is not None else self.coarse
        self.dataset = FolderDataset(
            self.root, self.class_names, in_dataset, self.ids, self.image_dir, self.gt_dir, self.skip_ids,
            self.ignore_zero,
        )  # fmt: skip

    def predict_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("predict")
        self.dataset.skip_ids = self.skip_ids
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            persistent_workers=False,
        )

