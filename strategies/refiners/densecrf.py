"""Fully connected CRF (Krähenbühl & Koltun) over the classes of an image, via pydensecrf2.

Presets name the post-processors papers actually ran:
  * "deeplab" (the default): the usual WSSS values of the DeepLab/PSA lineage, Gaussian
    sxy 3 compat 3, bilateral sxy 50 srgb 13 compat 10, 10 iterations, on the RGB image;
    probabilities normalised over the listed classes.
  * "clip_es": CLIP-ES's `eval_cam_with_crf.py` (G4Seg's Table II post-processing):
    Gaussian sxy 1 compat 3, bilateral sxy 67 srgb 3 compat 4, 10 iterations; the unary is
    pydensecrf's `unary_from_softmax` of the probabilities as given (its background is
    1 - max CAM, not normalised); the bilateral image is what its code passes: the image
    read as BGR, the Caffe mean (104.008, 116.669, 122.675) subtracted in float32, then cast
    to uint8 as NumPy casts (negative values wrap). Its pseudo-label rule (confidence below
    0.95 -> 255) makes training labels, not predictions; its `--eval_only` scoring path,
    which this preset reproduces, does not apply it.
Any key given explicitly overrides the preset's value.

Hard (0/1) input, such as label PNGs, is given the unary pydensecrf and the WSSS code give
label maps: `unary_from_labels` with `gt_prob` (0.7) on the argmax, so the CRF can move
labels; the run's notes say so. (From 0/1 probabilities the unary would be -log(1e-5) for
every other class and nothing would move.)
"""

from __future__ import annotations

import numpy as np
import torch

from g4seg.errors import ConfigError
from g4seg.interfaces import Refiner
from g4seg.types import ClassProbs, Generated, Sample

from .soft_input import is_hard

PRESETS = {
    "deeplab": {"iterations": 10, "gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 50.0,
                "bilateral_srgb": 13.0, "bilateral_compat": 10.0},
    "clip_es": {"iterations": 10, "gaussian_sxy": 1.0, "gaussian_compat": 3.0, "bilateral_sxy": 67.0,
                "bilateral_srgb": 3.0, "bilateral_compat": 4.0},
}  # fmt: skip
CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)
HARD_INPUT = ("labels", "as_is")


def pydensecrf():
    """The compiled package, imported when a DenseCRF is made, so that the other refiners
    work where it is not installed (an image with no compiler for its source)."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ConfigError("DenseCRF needs the pydensecrf2 package: pip install pydensecrf2") from None
    return dcrf


def clip_es_image(rgb: np.ndarray) -> np.ndarray:
    """The bilateral image of CLIP-ES's post-processor, from an RGB uint8 image."""
    bgr = rgb[..., ::-1].astype(np.float32)
    bgr -= np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.ascontiguousarray(bgr.astype(np.uint8))


class DenseCRF(Refiner):
    """Args:
    preset: "deeplab" or "clip_es" (module docstring).
    iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
        bilateral_compat: override the preset's value.
    hard_input: "labels" (0/1 input gets `unary_from_labels` with `gt_prob`) or "as_is".
    gt_prob: confidence of the given label for hard input (pydensecrf's default use 0.7).
    """

    runs_on_cpu = True  # pydensecrf is single-threaded C++: `g4seg predict` runs it in worker processes

    def __init__(
        self,
        preset: str = "deeplab",
        iterations: int | None = None,
        gaussian_sxy: float | None = None,
        gaussian_compat: float | None = None,
        bilateral_sxy: float | None = None,
        bilateral_srgb: float | None = None,
        bilateral_compat: float | None = None,
        hard_input: str = "labels",
        gt_prob: float = 0.7,
    ) -> None:
        super().__init__()
        pydensecrf()  # a missing package is named when the config is built, not at the first sample
        if preset not in PRESETS:
            raise ConfigError(f"DenseCRF preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if hard_input not in HARD_INPUT:
            raise ConfigError(f"DenseCRF hard_input must be one of {HARD_INPUT}, got {hard_input!r}")
        if not 0 < gt_prob < 1:
            raise ConfigError(f"DenseCRF gt_prob must lie in (0, 1), got {gt_prob}")
        given = {"iterations": iterations, "gaussian_sxy": gaussian_sxy, "gaussian_compat": gaussian_compat,
                 "bilateral_sxy": bilateral_sxy, "bilateral_srgb": bilateral_srgb, "bilateral_compat": bilateral_compat}  # fmt: skip
        values = {k: PRESETS[preset][k] if v is None else v for k, v in given.items()}
        self.preset, self.hard_input, self.gt_prob = preset, hard_input, float(gt_prob)
        self.iterations = int(values["iterations"])
        self.gaussian = (values["gaussian_sxy"], values["gaussian_compat"])
        self.bilateral = (values["bilateral_sxy"], values["bilateral_srgb"], values["bilateral_compat"])

    def resolved(self) -> dict:
        """What runs: the preset's values with the overrides applied."""
        return {**self.settings, "preset": self.preset, "iterations": self.iterations, "gaussian_sxy": self.gaussian[0],
                "gaussian_compat": self.gaussian[1], "bilateral_sxy": self.bilateral[0],
                "bilateral_srgb": self.bilateral[1], "bilateral_compat": self.bilateral[2],
                "hard_input": self.hard_input, "gt_prob": self.gt_prob}  # fmt: skip

    def unary(self, probs: ClassProbs) -> tuple[np.ndarray, str | None]:
        from pydensecrf.utils import unary_from_labels, unary_from_softmax

        p = probs.probs.detach().cpu().numpy().astype(np.float32)
        if self.hard_input == "labels" and is_hard(p):
            labels = p.argmax(0)  # channel index: the label of each pixel
            unary = unary_from_labels(labels, len(p), gt_prob=self.gt_prob, zero_unsure=False)
            return unary, f"input hard: unary from labels, gt_prob {self.gt_prob:g}"
        if self.preset == "deeplab":
            p = p / np.clip(p.sum(0, keepdims=True), 1e-5, None)  # the lineage's unaries are of a distribution
        return unary_from_softmax(p), None

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        k, h, w = probs.probs.shape
        if k < 2:
            return probs.with_probs(probs.probs, "no update (background only: nothing for a CRF to decide)")
        unary, note = self.unary(probs)
        rgb = sample.image.cpu().numpy().astype(np.uint8)
        image = clip_es_image(rgb) if self.preset == "clip_es" else np.ascontiguousarray(rgb)
        crf = pydensecrf().DenseCRF2D(w, h, k)  # width first
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        crf.addPairwiseGaussian(sxy=self.gaussian[0], compat=self.gaussian[1])
        sxy, srgb, compat = self.bilateral
        crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=compat)
        q = np.array(crf.inference(self.iterations), dtype=np.float32).reshape(k, h, w)
        return probs.with_probs(torch.from_numpy(q), note)
