"""The report's plots: gain per stratum (with CIs), gain per class, and initial IoU vs gain
per (image, class) instance. Matplotlib with the Agg backend; files written atomically."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.metrics import MIN_INSTANCES, SHOWN, TITLES, metric_keys
from ..files import atomic_write_bytes
from .cells import FEW, stratum_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _label(metrics: dict, name: str) -> str:
    return f"{name} (random weights)" if name in metrics.get("random_weights", []) else name


def plot_strata(metrics: dict, path: Path, shown: Sequence[str] = SHOWN) -> None:
    """Gain per stratum per strategy, one panel per metric (stacked, so that the picture is
    at most ~1,300 px wide and shown unscaled on the page), 95% CIs as error bars, the legend
    below the panels rather than over the bars."""
    import numpy as np

    plt = _pyplot()

    names = list(metrics["strategies"])
    first = metrics["strategies"][names[0]]
    labels = ["all"] + [f"{stratum_label(s['low'], s['high'])}\n(n={s['count']})" for s in first["strata"]]
    width = 0.8 / max(1, len(names))
    legend_rows = math.ceil(len(names) / 4)
    width_in = min(12.0, max(7.0, 1.2 + 0.32 * len(names) * len(labels)))
    height_in = 3.2 * len(shown) + 0.3 + 0.25 * legend_rows
    fig, axes = plt.subplots(len(shown), 1, figsize=(width_in, height_in), squeeze=False)
    x = np.arange(len(labels))
    for ax, metric in zip(axes[:, 0], shown):
        _, _, kg, kc = metric_keys(metric)
        for i, name in enumerate(names):
            m = metrics["strategies"][name]
            entries = [m] + m["strata"]
            counts = [None] + [e["count"] for e in m["strata"]]
            # an empty stratum draws no bar; one with few instances a pale hatched bar without interval
            few = [c is not None and 0 < c < MIN_INSTANCES for c in counts]
            gains = [math.nan if c == 0 or e[kg] is None else e[kg] for e, c in zip(entries, counts)]
            cis = [None if f else e.get(kc) for e, f in zip(entries, few)]
            err = np.array([[g - c[0], c[1] - g] if c else [0.0, 0.0] for g, c in zip(gains, cis)]).T.clip(min=0)
            label = _label(metrics, name)
            bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, gains, width, label=label,
                          yerr=err if any(cis) else None, capsize=2, error_kw={"linewidth": 0.8})  # fmt: skip
            for bar, flagged in zip(bars, few):
                if flagged:
                    bar.set_hatch("//")
                    bar.set_alpha(0.35)
            texts = ["" if math.isnan(g) else f"{g:.1f}" + (FEW if f else "") for g, f in zip(gains, few)]
            ax.bar_label(bars, labels=texts, fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, labels)
        ax.set_xlabel("initial IoU of the coarse mask (%)")
        ax.set_ylabel(f"{TITLES[metric]} gain over coarse (points)")
        ax.set_title(TITLES[metric] + (" (random weights!)" if metrics.get("random_weights") else ""))
    handles, texts = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    title = "Refinement gain by input quality" + (" (bars: 95% bootstrap CI)" if "bootstrap" in metrics else "")
    if any(0 < s["count"] < MIN_INSTANCES for m in metrics["strategies"].values() for s in m["strata"]):
        title += f"; hatched {FEW}: fewer than {MIN_INSTANCES} instances, not a result; no bar: empty stratum"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, (0.1 + 0.25 * legend_rows) / height_in, 1, 1))
    _save(fig, path)


def plot_per_class(metrics: dict, path: Path) -> None:
    """IoU gain per class per strategy (classes that occur), horizontal bars."""
    import numpy as np

    plt = _pyplot()
    names = list(metrics["strategies"])
    classes = list(metrics["strategies"][names[0]].get("per_class", {}))
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(classes) + 0.04 * len(classes) * len(names)))
    y = np.arange(len(classes))
    height = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        per_class = metrics["strategies"][name].get("per_class", {})
        gains = [(per_class[c]["iou_refined"] or 0.0) - per_class[c]["iou_baseline"] for c in classes]
        ax.barh(y + (i - (len(names) - 1) / 2) * height, gains, height, label=_label(metrics, name))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, classes)
    ax.invert_yaxis()
    ax.set_xlabel("IoU gain over coarse (points)")
    ax.set_title("Gain per class")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


def plot_instances(metrics: dict, instances: dict[str, list[tuple[float, float]]], edges: Sequence[float], path: Path) -> None:
    """Initial IoU vs IoU gain of every (image, class) instance, one colour per strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name, points in instances.items():
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=9, alpha=0.6, label=_label(metrics, name))
    for e in edges[1:-1]:
        ax.axvline(e, color="grey", linewidth=0.6, linestyle="--")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("initial IoU of the coarse mask (%)")
    ax.set_ylabel("IoU gain (points)")
    ax.set_title("Gain per (image, class) instance")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)
