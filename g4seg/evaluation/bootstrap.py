"""Paired bootstrap confidence intervals for every gain.

The paper's gains are a fraction of a point; whether a gain is more than the luck of which
images are in the set is answered by resampling images with replacement and recomputing
each metric with the very function of the point estimate (`metrics.py`), given the
resample's multiplicities as image weights. Paired: one resample of images serves the
baseline and every strategy, so the interval is of the difference, not of two noisy
levels. A resample is two matrix products, so 1,449 images x 1,000 resamples take well
under a second per metric.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 10_000  # 1,000 left up to 5.5 points of seed-to-seed spread on an endpoint (docs/benchmarks.md)
DEFAULT_SEED = 0


def check_resampling(resamples: int, seed: int, prefix: str = "--") -> None:
    """Resamples >= 0 (0: no intervals) and a seed numpy accepts (>= 0), named as the caller's
    keys (`--bootstrap` / `scoring.bootstrap`)."""
    from ..errors import ConfigError

    if resamples < 0:
        raise ConfigError(f"{prefix}bootstrap must be >= 0 (0: no intervals), got {resamples}")
    if seed < 0:
        raise ConfigError(f"{prefix}seed (the bootstrap's) must be >= 0, got {seed}")


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """[R, N] multiplicities of the N images in each of R resamples."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def percentile_interval(gains: np.ndarray) -> list[float] | None:
    """2.5th and 97.5th percentile of the finite resampled gains (points), None if none is."""
    finite = gains[np.isfinite(gains)]
    return [float(x) for x in np.percentile(finite, [2.5, 97.5])] if finite.size else None
