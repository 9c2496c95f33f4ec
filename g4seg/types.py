"""Records that cross module boundaries.

Everything here lives on the CPU in plain tensors so that datamodules, strategies,
metrics and writers can be developed and tested apart from each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records are read back without torch (`g4seg report` starts in a second)
    import torch

IGNORE_INDEX = 255


@dataclass
class ClassProbs:
    """Per-class probabilities of the classes an image is scored on.

    Only the classes the coarse segmenter proposes are stored (background first), so a
    COCO-Object image with 3 classes costs 3 maps, not 81. A class that is not listed has
    probability 0 everywhere.
    """

    class_ids: torch.Tensor  # int64 [K], dataset class indices; class_ids[0] == 0 (background)
    probs: torch.Tensor  # float32 [K, H, W] in [0, 1]
    notes: tuple[str, ...] = ()  # what refiners did to their input (e.g. softened it), for reports

    def __post_init__(self) -> None:
        if self.probs.ndim != 3 or self.class_ids.ndim != 1 or len(self.class_ids) != len(self.probs):
            raise ValueError(
                f"ClassProbs needs probs [K,H,W] and class_ids [K]; got {tuple(self.probs.shape)} "
                f"and {tuple(self.class_ids.shape)}"
            )

    @property
    def size(self) -> tuple[int, int]:
        return int(self.probs.shape[1]), int(self.probs.shape[2])

    def labels(self) -> torch.Tensor:
        """Dataset label map: argmax over the listed classes, background included."""
        # max(0).indices: same first-maximum tie rule as argmax, ~10x faster over the class axis on CPU
        return self.class_ids[self.probs.max(0).indices].long()

    def with_probs(self, probs: torch.Tensor, note: str | None = None) -> ClassProbs:
        notes = self.notes + ((note,) if note and note not in self.notes else ())
        return ClassProbs(self.class_ids, probs.float(), notes)

    def foreground(self) -> list[tuple[int, int]]:
        """(channel, class id) of every non-background class."""
        return [(k, int(c)) for k, c in enumerate(self.class_ids) if int(c) != 0]


@dataclass
class Sample:
    """One image with its ground truth and the coarse prediction to refine."""

    id: str
    image: torch.Tensor  # uint8 [H, W, 3] RGB
    gt: torch.Tensor  # int64 [H, W], IGNORE_INDEX = not scored
    class_names: list[str]  # of the dataset, index = class id, 0 = background
    coarse: ClassProbs | None  # None until the module's coarse stage (a model producer) fills it
    files: dict[str, str] = field(default_factory=dict)  # what was read: "image", "gt", "coarse" -> resolved path
    digests: dict[str, str] = field(default_factory=dict)  # path -> SHA-256 of the bytes read (resume check)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class AlreadyDone:
    """Stand-in for a sample whose results are already on disk (resume); not to be confused
    with a sample that is loaded but not scored (`SampleResult.unscored_reason`).

    The dataset yields it instead of loading the image so that samplers keep their length
    (Lightning's unrepeated DDP sampler asserts every rank gets a sample).
    """

    id: str


@dataclass
class Generated:
    """Images an injector generated for one sample: one per foreground class."""

    sample_id: str
    class_ids: list[int]
    images: torch.Tensor  # uint8 [N, H, W, 3], at the sample's size, in class_ids order
    injector: str = ""

    def image_for(self, class_id: int) -> torch.Tensor:
        try:
            return self.images[self.class_ids.index(class_id)]
        except ValueError:
            raise KeyError(
                f"injector {self.injector!r} generated no image for class {class_id} of sample {self.sample_id}"
            ) from None


@dataclass
class SourceCounts:
    """Per-class counts of one label map against the GT: region and boundary intersection
    and union pixels, and the boundary accuracy of each GT class.

    Sums of these over samples give dataset IoU and Boundary IoU exactly, which is why
    records store them, metrics keep them as states, and the bootstrap resamples them.
    """

    inter: dict[int, int] = field(default_factory=dict)
    union: dict[int, int] = field(default_factory=dict)
    b_inter: dict[int, int] = field(default_factory=dict)  # Boundary IoU: |G_d and P_d| per class
    b_union: dict[int, int] = field(default_factory=dict)  # |G_d or P_d|
    ba: dict[int, float] = field(default_factory=dict)  # boundary accuracy per GT foreground class (mBA)
    gt: dict[int, int] = field(default_factory=dict)  # scored GT pixels per class (pixel accuracy, mAcc)


@dataclass
class SampleResult:
    """What one sample produced: label maps to write and counts to score."""

    id: str
    labels: dict[str, torch.Tensor]  # source name ("baseline" or a strategy) -> int64 [H, W]
    counts: dict[str, SourceCounts]
    generated: dict[str, Generated] = field(default_factory=dict)  # injector name -> images
    seconds: dict[str, float] = field(default_factory=dict)  # strategy -> wall time spent on this sample
    random_weights: list[str] = field(default_factory=list)  # strategies that ran untrained models
    notes: dict[str, list[str]] = field(default_factory=dict)  # strategy -> what its refiners did to the input
    unscored_reason: str | None = None  # e.g. GT all ignore: counted, not scored
    files: dict[str, str] = field(default_factory=dict)  # the sample's input files (the report's gallery reads them)
    digests: dict[str, str] = field(default_factory=dict)  # path -> SHA-256 of the bytes the result was computed from
    # what is still to compute: label maps, notes, seconds and counts (the writer thread does
    # it while the device runs the next batch, and waits there for the CPU refiners' workers)
    pending: Callable[[], SampleResult] | None = field(default=None, repr=False, compare=False)

    def finish(self) -> SampleResult:
        """The result complete, if its computation was left to the writer."""
        if self.pending is not None:
            done, self.pending = self.pending(), None
            self.labels, self.counts, self.seconds, self.notes = done.labels, done.counts, done.seconds, done.notes
        return self


BASELINE = "baseline"
