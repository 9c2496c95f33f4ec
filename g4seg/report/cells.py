"""How one gain reads, in the terminal table and on the page: with its interval, empty for
an empty stratum, marked for a stratum too small to read as a result."""

from __future__ import annotations

import math

from ..evaluation.metrics import MIN_INSTANCES

FEW = "†"  # marks a stratum with fewer than MIN_INSTANCES instances: shown, not a result


def stratum_label(low: float, high: float) -> str:
    """A stratum's name everywhere it is shown (tables, plot, page, gallery): "40-80"."""
    return f"{low:g}-{high:g}"


def gain_text(gain: float | None, ci: list | None, count: int | str = "") -> str:
    """The gain with its interval; empty for an empty stratum, marked for a tiny one."""
    if count == 0:
        return "—"
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        return "n/a"
    few = isinstance(count, int) and count < MIN_INSTANCES
    return f"{gain:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") + (f" {FEW}" if few else "")


def stratum_footnote(metrics: dict) -> list[str]:
    counts = [s["count"] for m in metrics["strategies"].values() for s in m["strata"]]
    if any(0 < c < MIN_INSTANCES for c in counts):
        return [f"{FEW} fewer than {MIN_INSTANCES} instances in the stratum: too few to read as a result."]
    return []
