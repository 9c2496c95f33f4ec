"""Readable results: metrics.json, metrics.csv, a markdown table and strata.png.

`rebuild` recomputes everything from the per-sample records, through the same metric
class the live run uses, so a report made later (other strata edges, say) matches.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, RunFolderError
from .metrics import StrategyMetrics
from .records import MANIFEST, atomic_write_bytes, atomic_write_json, from_record, load_records
from .runfolder import read_manifest


def fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def mean_seconds(records: Sequence[dict]) -> dict[str, float]:
    """Mean wall time per scored sample and strategy (generation included)."""
    sums: dict[str, list[float]] = {}
    for r in records:
        for name, s in r.get("seconds", {}).items():
            sums.setdefault(name, []).append(s)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def rows(metrics: dict) -> list[dict]:
    out = []
    for name, m in metrics["strategies"].items():
        out.append({"strategy": name, "stratum": "all", "count": "", "miou_baseline": m["miou_baseline"],
                    "miou_refined": m["miou_refined"], "gain": m["gain"]})
        for s in m["strata"]:
            out.append({"strategy": name, "stratum": f"{s['low']:g}-{s['high']:g}", "count": s["count"],
                        "miou_baseline": s["miou_baseline"], "miou_refined": s["miou_refined"], "gain": s["gain"]})
    return out


def markdown(metrics: dict, seconds: dict[str, float] | None = None) -> str:
    seconds = seconds or {}
    lines = [
        f"samples: {metrics['num_samples']} (not scored, ground truth all ignore: {metrics['num_unscored']})",
        "",
        "| strategy | initial IoU | instances | mIoU baseline | mIoU refined | gain | s/image |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows(metrics):
        sec = fmt(seconds.get(r["strategy"])) if r["stratum"] == "all" else ""
        lines.append(
            f"| {r['strategy']} | {r['stratum']} | {r['count']} | {fmt(r['miou_baseline'])} | "
            f"{fmt(r['miou_refined'])} | {fmt(r['gain'])} | {sec} |"
        )
    if metrics.get("random_weights"):
        lines += ["", f"NOTE: random (untrained) weights were used by: {', '.join(metrics['random_weights'])}."]
    scored = metrics["num_samples"] - metrics["num_unscored"]
    for name, notes in metrics.get("notes", {}).items():
        for text, count in notes.items():
            lines += [f"NOTE: {name}: {text} on {count}/{scored} samples."]
    return "\n".join(lines) + "\n"


def plot_strata(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(metrics["strategies"])
    first = metrics["strategies"][names[0]]
    labels = ["all"] + [f"{s['low']:g}-{s['high']:g}\n(n={s['count']})" for s in first["strata"]]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 4))
    x = np.arange(len(labels))
    for i, name in enumerate(names):
        m = metrics["strategies"][name]
        gains = [m["gain"]] + [s["gain"] for s in m["strata"]]
        gains = [0.0 if g is None or math.isnan(g) else g for g in gains]
        label = f"{name} (random weights)" if name in metrics.get("random_weights", []) else name
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, gains, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("initial IoU of the coarse mask (%)")
    ax.set_ylabel("mIoU gain over coarse (points)")
    title = "Refinement gain by input quality"
    if metrics.get("random_weights"):
        title += " (random weights!)"
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(out_dir: Path, metrics: dict, seconds: dict[str, float] | None = None) -> str:
    """Writes the four report files; returns the markdown table."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if seconds:
        atomic_write_json(out_dir / "timings.json", {"seconds_per_image": seconds})
    buf = io.StringIO()
    table_rows = rows(metrics)
    writer = csv.DictWriter(buf, fieldnames=list(table_rows[0]))
    writer.writeheader()
    writer.writerows(table_rows)
    atomic_write_bytes(out_dir / "metrics.csv", buf.getvalue().encode())
    table = markdown(metrics, seconds)
    atomic_write_bytes(out_dir / "summary.md", table.encode())
    plot_strata(metrics, out_dir / "strata.png")
    return table


def rebuild(out_dir: Path, edges: Sequence[float] | None = None) -> tuple[dict, str]:
    """Metrics and report from the records of a (finished or interrupted) run: exactly the
    ids the run scores (run.json), each once."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise RunFolderError(f"{out_dir}: no {MANIFEST}; not a g4seg predict output folder")
    records = load_records(out_dir, manifest.get("ids"))
    if not records:
        raise RunFolderError(f"{out_dir}: no per-sample records yet")
    try:
        metrics = StrategyMetrics(manifest["strategies"], len(manifest["class_names"]), edges or manifest["strata_edges"])
    except ValueError as e:
        raise ConfigError(f"--edges: {e}") from None
    for record in records:
        metrics.update(from_record(record))
    result = finish(metrics.compute(manifest["class_names"]), records)
    return result, write_report(out_dir, result, mean_seconds(records))


def finish(metrics: dict, records: Sequence[dict]) -> dict:
    """Adds what only the records know: which strategies ran on random weights, and what
    refiners did to their input (e.g. softened hard masks), counted over samples."""
    random = sorted({name for r in records for name in r.get("random_weights", [])})
    if random:
        metrics["random_weights"] = random
    notes: dict[str, dict[str, int]] = {}
    for r in records:
        for name, texts in r.get("notes", {}).items():
            for text in texts:
                notes.setdefault(name, {}).setdefault(text, 0)
                notes[name][text] += 1
    if notes:
        metrics["notes"] = {name: dict(sorted(n.items())) for name, n in sorted(notes.items())}
    return metrics
