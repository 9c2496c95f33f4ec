"""Readable results: metrics.json, metrics.csv, a markdown table and strata.png, with the
bootstrap intervals of every gain.

`rebuild` recomputes everything from the per-sample records, through the same metric
class the live run uses, so a report made later (other strata edges, say) matches.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, confidence_intervals
from .errors import ConfigError, RunFolderError
from .metrics import METRICS, SHOWN, TITLES, StrategyMetrics, metric_keys
from .html_report import write_html
from .plots import plot_strata
from .records import MANIFEST, atomic_write_bytes, atomic_write_json, from_record, load_records
from .runfolder import read_manifest
from .types import SampleResult


def fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def mean_seconds(results: Sequence[SampleResult]) -> dict[str, float]:
    """Mean wall time per scored sample and strategy (generation included)."""
    sums: dict[str, list[float]] = {}
    for r in results:
        for name, s in r.seconds.items():
            sums.setdefault(name, []).append(s)
    return {k: sum(v) / len(v) for k, v in sums.items()}


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
        for stratum, count, entry in [("all", "", m)] + [(f"{s['low']:g}-{s['high']:g}", s["count"], s) for s in m["strata"]]:
            row = {"strategy": name, "stratum": stratum, "count": count}
            for metric in METRICS:
                row.update(_cells(entry, metric))
            out.append(row)
    return out


def gain_text(gain: float | None, ci: list | None) -> str:
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        return "n/a"
    return f"{gain:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def markdown(metrics: dict, seconds: dict[str, float] | None = None, shown: Sequence[str] = SHOWN) -> str:
    seconds = seconds or {}
    head = ["strategy", "initial IoU", "instances"]
    for metric in shown:
        t = TITLES[metric]
        head += [f"{t} baseline", f"{t} refined", f"{t} gain [95% CI]"]
    head.append("s/image")
    lines = [
        f"samples: {metrics['num_samples']} (not scored, ground truth all ignore: {metrics['num_unscored']})",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for r in rows(metrics):
        cells = [r["strategy"], r["stratum"], str(r["count"])]
        for metric in shown:
            ci = [r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]] if r[f"{metric}_ci_low"] is not None else None
            cells += [fmt(r[f"{metric}_baseline"]), fmt(r[f"{metric}_refined"]), gain_text(r[f"{metric}_gain"], ci)]
        cells.append(fmt(seconds.get(r["strategy"])) if r["stratum"] == "all" else "")
        lines.append("| " + " | ".join(cells) + " |")
    if "bootstrap" in metrics:
        b = metrics["bootstrap"]
        lines += ["", f"95% CI: paired bootstrap over images, {b['resamples']} resamples, seed {b['seed']}."]
    if metrics.get("random_weights"):
        lines += ["", f"NOTE: random (untrained) weights were used by: {', '.join(metrics['random_weights'])}."]
    scored = metrics["num_samples"] - metrics["num_unscored"]
    for name, notes in metrics.get("notes", {}).items():
        for text, count in notes.items():
            lines += [f"NOTE: {name}: {text} on {count}/{scored} samples."]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, metrics: dict, results: Sequence[SampleResult], settings: ReportSettings | None = None) -> str:
    """Writes metrics.json, metrics.csv, summary.md, the plots and report.html; returns the
    markdown table."""
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
    atomic_write_bytes(out_dir / "summary.md", table.encode())
    plot_strata(metrics, out_dir / "strata.png", settings.metrics)
    write_html(out_dir, metrics, results, read_manifest(out_dir) or {}, settings.metrics, settings.gallery)
    return table


@dataclass
class ReportSettings:
    """What the report shows and how its intervals are drawn (not part of the records)."""

    metrics: Sequence[str] = SHOWN
    bootstrap: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    gallery: int = 12  # best and worst samples shown per strategy and stratum in report.html


def rebuild(out_dir: Path, edges: Sequence[float] | None = None, shown: Sequence[str] | None = None,
            bootstrap: int | None = None, seed: int | None = None, gallery: int | None = None) -> tuple[dict, str]:  # fmt: skip
    """Metrics and report from the records of a (finished or interrupted) run: exactly the
    ids the run scores (run.json), each once. Settings not given are the run's own."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise RunFolderError(f"{out_dir}: no {MANIFEST}; not a g4seg predict output folder")
    results = [from_record(r) for r in load_records(out_dir, manifest.get("ids"))]
    if not results:
        raise RunFolderError(f"{out_dir}: no per-sample records yet")
    run = (manifest.get("config") or {}).get("scoring") or {}
    settings = ReportSettings(
        check_shown(shown or run.get("metrics") or SHOWN),
        run.get("bootstrap", DEFAULT_RESAMPLES) if bootstrap is None else bootstrap,
        run.get("seed", DEFAULT_SEED) if seed is None else seed,
        run.get("gallery", 12) if gallery is None else gallery,
    )
    edges = list(edges or manifest["strata_edges"])
    try:
        metrics = StrategyMetrics(manifest["strategies"], len(manifest["class_names"]), edges)
    except ValueError as e:
        raise ConfigError(f"--edges: {e}") from None
    for result in results:
        metrics.update(result)
    document = finish(metrics.compute(manifest["class_names"]), results, len(manifest["class_names"]), edges, settings)
    return document, write_report(out_dir, document, results, settings)


def finish(metrics: dict, results: Sequence[SampleResult], num_classes: int, edges: Sequence[float],
           settings: ReportSettings | None = None) -> dict:  # fmt: skip
    """Adds what only the records know: the bootstrap intervals of every gain, which
    strategies ran on random weights, and what refiners did to their input (e.g. softened
    hard masks), counted over samples."""
    settings = settings or ReportSettings()
    cis = confidence_intervals(results, list(metrics["strategies"]), num_classes, edges, settings.bootstrap, settings.seed)
    for name, by_metric in cis.items():
        entry = metrics["strategies"][name]
        for metric, intervals in by_metric.items():
            key = metric_keys(metric)[3]
            entry[key] = intervals[0]
            for stratum, ci in zip(entry["strata"], intervals[1:]):
                stratum[key] = ci
    if cis:
        metrics["bootstrap"] = {"resamples": settings.bootstrap, "seed": settings.seed, "level": 0.95}
    random = sorted({name for r in results for name in r.random_weights})
    if random:
        metrics["random_weights"] = random
    notes: dict[str, dict[str, int]] = {}
    for r in results:
        for name, texts in r.notes.items():
            for text in texts:
                notes.setdefault(name, {}).setdefault(text, 0)
                notes[name][text] += 1
    if notes:
        metrics["notes"] = {name: dict(sorted(n.items())) for name, n in sorted(notes.items())}
    return metrics
