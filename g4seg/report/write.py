"""Readable results: metrics.json, metrics.csv, a markdown table, the plots and
report.html, all from the metrics document (`evaluation.summary`) and the per-sample
results. Writes files only; computes no metric."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.metrics import METRICS, SHOWN, TITLES, metric_keys
from ..evaluation.summary import mean_seconds
from ..files import atomic_write_bytes, atomic_write_json
from ..types import SampleResult
from . import per_class, winners
from .cells import gain_text, stratum_footnote, stratum_label
from .gallery import DEFAULT_GALLERY
from .html import write_html
from .plots import plot_strata


def fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def check_shown(shown: Sequence[str], key: str = "--metrics") -> list[str]:
    unknown = [m for m in shown if m not in METRICS]
    if unknown or not shown:
        raise ConfigError(f"{key}: unknown {unknown or 'none given'}; choose from {list(METRICS)}")
    return list(shown)


def _cells(entry: dict, metric: str) -> dict:
    kb, kr, kg, kc = metric_keys(metric)
    ci = entry.get(kc)
    return {f"{metric}_baseline": entry[kb], f"{metric}_refined": entry[kr], f"{metric}_gain": entry[kg],
            f"{metric}_ci_low": ci[0] if ci else None, f"{metric}_ci_high": ci[1] if ci else None}  # fmt: skip


def rows(metrics: dict) -> list[dict]:
    """One row per (strategy, stratum) with every metric: the CSV."""
    out = []
    for name, m in metrics["strategies"].items():
        for stratum, count, entry in [("all", "", m)] + [(stratum_label(s["low"], s["high"]), s["count"], s) for s in m["strata"]]:
            row = {"strategy": name, "stratum": stratum, "count": count}
            images = entry.get("images") or {}
            row["images_won"] = f"{images.get('wins', 0)}/{sum(images.values())}" if images else ""
            for metric in METRICS:
                row.update(_cells(entry, metric))
            out.append(row)
    return out


def markdown(metrics: dict, seconds: dict[str, float] | None = None, shown: Sequence[str] = SHOWN) -> str:
    seconds = seconds or {}
    head = ["strategy", "initial IoU", "instances"]
    for metric in shown:
        t = TITLES[metric]
        head += [f"{t} baseline", f"{t} refined", f"{t} gain [95% CI]"]
    head += ["images improved", "s/image"]
    lines = [
        f"samples: {metrics['num_samples']} (not scored, ground truth all ignore: {metrics['num_unscored']})",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for r in rows(metrics):
        cells = [r["strategy"], r["stratum"], str(r["count"])]
        empty = r["count"] == 0
        for metric in shown:
            ci = [r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]] if r[f"{metric}_ci_low"] is not None else None
            values = ["—", "—"] if empty else [fmt(r[f"{metric}_baseline"]), fmt(r[f"{metric}_refined"])]
            cells += [*values, gain_text(r[f"{metric}_gain"], ci, r["count"])]
        cells.append(r["images_won"])
        cells.append(fmt(seconds.get(r["strategy"])) if r["stratum"] == "all" else "")
        lines.append("| " + " | ".join(cells) + " |")
    footnote = stratum_footnote(metrics)
    lines += ["", *footnote] if footnote else []
    lines += ["", interval_line(metrics)]
    return "\n".join(lines + note_lines(metrics)) + "\n"


def interval_line(metrics: dict) -> str:
    b = metrics.get("bootstrap")
    if not b:
        return "No confidence intervals: bootstrap 0 resamples (gains are point estimates)."
    return f"95% CI: paired bootstrap over images, {b['resamples']} resamples, seed {b['seed']}."


def note_lines(metrics: dict) -> list[str]:
    """What the numbers cannot say by themselves: random weights, and what refiners did."""
    lines = []
    if metrics.get("random_weights"):
        lines += ["", f"NOTE: random (untrained) weights were used by: {', '.join(metrics['random_weights'])}."]
    scored = metrics["num_samples"] - metrics["num_unscored"]
    for name, notes in metrics.get("notes", {}).items():
        for text, count in notes.items():
            lines += [f"NOTE: {name}: {text} on {count}/{scored} samples."]
    return lines


def terminal_summary(metrics: dict, shown: Sequence[str] = SHOWN) -> str:
    """What a run prints: the winners view of the first shown metric and the notes (the
    full table is summary.md)."""
    head = f"samples: {metrics['num_samples']} (not scored, ground truth all ignore: {metrics['num_unscored']})\n\n"
    return head + winners.terminal(metrics, shown[0]) + "\n".join([interval_line(metrics), *note_lines(metrics)]) + "\n"


def write_report(out_dir: Path, metrics: dict, results: Sequence[SampleResult], manifest: dict,
                 settings: ReportSettings | None = None, run_dir: Path | None = None) -> str:  # fmt: skip
    """Writes metrics.json, metrics.csv, summary.md, the plots and report.html into
    `out_dir`, for the run in `run_dir` (default: `out_dir`); returns what the terminal shows."""
    out_dir = Path(out_dir)
    settings = settings or ReportSettings()
    atomic_write_json(out_dir / "metrics.json", metrics)
    seconds = mean_seconds(results)
    if seconds:
        atomic_write_json(out_dir / "timings.json", {"seconds_per_image": seconds})
    buf = io.StringIO()
    table_rows = rows(metrics)
    writer = csv.DictWriter(buf, fieldnames=list(table_rows[0]))
    writer.writeheader()
    writer.writerows(table_rows)
    atomic_write_bytes(out_dir / "metrics.csv", buf.getvalue().encode())
    table = markdown(metrics, seconds, settings.metrics)
    atomic_write_bytes(out_dir / "summary.md", (table + "\n" + per_class.markdown(metrics)).encode())
    plot_strata(metrics, out_dir / "strata.png", settings.metrics)
    write_html(out_dir, metrics, results, manifest, settings.metrics, settings.gallery, run_dir)
    return terminal_summary(metrics, settings.metrics)


@dataclass
class ReportSettings:
    """What the report shows and how its intervals are drawn (not part of the records)."""

    metrics: Sequence[str] = SHOWN
    bootstrap: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    gallery: int = DEFAULT_GALLERY
