"""Synthetic records for measuring the evaluation layer at scale (benchmarks, speed tests)."""

from __future__ import annotations

import numpy as np


def voc_like_records(rng, n: int, strategies: list[str], classes: int = 21) -> list[dict]:
    """Records shaped like VOC val's (background + 2 classes an image), random counts: for
    measuring the summary, bootstrap and report at a real run's size."""
    records = []
    for i in range(n):
        present = [0, *rng.choice(np.arange(1, classes), 2, replace=False).tolist()]
        counts = {}
        for name in ["baseline", *strategies]:
            inter = {c: int(rng.integers(0, 10000)) for c in present}
            counts[name] = {"inter": {str(c): v for c, v in inter.items()},
                            "union": {str(c): v + int(rng.integers(1, 5000)) for c, v in inter.items()},
                            "b_inter": {str(c): v // 10 for c, v in inter.items()},
                            "b_union": {str(c): v // 10 + 500 for c, v in inter.items()},
                            "ba": {str(c): float(rng.random()) for c in present[1:]},
                            "gt": {str(c): v + int(rng.integers(0, 2000)) for c, v in inter.items()}}  # fmt: skip
        records.append({"id": str(i), "counts": counts})
    return records
