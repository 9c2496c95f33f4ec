"""Fully connected CRF (Krähenbühl & Koltun) over the classes of an image, via pydensecrf2.

Defaults are the usual WSSS post-processing values (DeepLab/PSA lineage): Gaussian
sxy=3, compat=3; bilateral sxy=50, srgb=13, compat=10; 10 mean-field iterations.
CLIP-ES uses bilateral (67, 3, 4); set those keys to reproduce it.
"""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import torch

from g4seg.interfaces import Refiner
from g4seg.types import ClassProbs, Generated, Sample


class DenseCRF(Refiner):
    def __init__(
        self,
        iterations: int = 10,
        gaussian_sxy: float = 3.0,
        gaussian_compat: float = 3.0,
        bilateral_sxy: float = 50.0,
        bilateral_srgb: float = 13.0,
        bilateral_compat: float = 10.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.iterations = iterations
        self.gaussian = (gaussian_sxy, gaussian_compat)
        self.bilateral = (bilateral_sxy, bilateral_srgb, bilateral_compat)
        self.eps = eps

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        k, h, w = probs.probs.shape
        if k < 2:
            return probs
        p = probs.probs.detach().cpu().numpy().astype(np.float32)
        p = p / np.clip(p.sum(0, keepdims=True), self.eps, None)  # CRF unaries expect a distribution
        crf = dcrf.DenseCRF2D(w, h, k)  # width first
        crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(p, self.eps, 1.0)).reshape(k, -1)))
        crf.addPairwiseGaussian(sxy=self.gaussian[0], compat=self.gaussian[1])
        sxy, srgb, compat = self.bilateral
        image = np.ascontiguousarray(sample.image.cpu().numpy().astype(np.uint8))
        crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=compat)
        q = np.array(crf.inference(self.iterations), dtype=np.float32).reshape(k, h, w)
        return probs.with_probs(torch.from_numpy(q))
