"""`g4seg report OUTDIR`: rebuilds the tables, plot and page from the per-sample records.
It never imports Lightning or torch, so it answers in about a second."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.metrics import SHOWN
from ..report.write import ReportSettings, check_shown
from .folder import RunFolder
from .scoring import score


def report_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="g4seg report", description="rebuild tables and plot from records")
    parser.add_argument("output_dir")
    parser.add_argument("--edges", type=float, nargs="+", help="strata edges in percent, e.g. 0 40 80 100")
    parser.add_argument("--metrics", nargs="+", help="table columns: miou boundary_iou mba miou_image (default: the run's)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for the CIs (default: the run's; 0 = none)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default: the run's)")
    parser.add_argument("--gallery", type=int, help="best/worst samples per strategy and stratum in report.html")
    args = parser.parse_args(argv)
    folder = RunFolder.open(args.output_dir)
    run = ((folder.manifest or {}).get("config") or {}).get("scoring") or {}
    pick = lambda given, key, default: given if given is not None else run.get(key, default)  # noqa: E731
    settings = ReportSettings(check_shown(args.metrics or run.get("metrics") or SHOWN),
                              pick(args.bootstrap, "bootstrap", DEFAULT_RESAMPLES), pick(args.seed, "seed", DEFAULT_SEED),
                              pick(args.gallery, "gallery", 12))  # fmt: skip
    _, table = score(folder, settings, args.edges)
    print(table)
    print(f"report: {(Path(args.output_dir) / 'report.html').resolve()}")
