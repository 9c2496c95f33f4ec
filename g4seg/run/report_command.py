"""`g4seg report OUTDIR`: rebuilds the tables, plot and page from the per-sample records.

It never overwrites a report: a run folder that holds none yet (a stopped run) gets its
own; otherwise the new one goes to OUTDIR/reports/N (the first free N) or `--output`, and
only `--in-place` rewrites the run's. It never imports Lightning or torch, so it answers in
about a second."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, check_resampling
from ..evaluation.metrics import check_edges
from ..evaluation.metrics import SHOWN
from ..report.gallery import DEFAULT_GALLERY
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
    parser.add_argument("--output", help="folder for this report (default: OUTDIR/reports/N, the first free N)")
    parser.add_argument("--in-place", action="store_true", help="rewrite the run's own report files instead")
    args = parser.parse_args(argv)
    check_resampling(0 if args.bootstrap is None else args.bootstrap, 0 if args.seed is None else args.seed)
    if args.gallery is not None and args.gallery < 0:
        raise ConfigError(f"--gallery must be >= 0, got {args.gallery}")
    if args.edges:
        check_edges(args.edges, "--edges")
    folder = RunFolder.open(args.output_dir)
    target = report_folder(folder.path, args.output, args.in_place)
    run = ((folder.manifest or {}).get("config") or {}).get("scoring") or {}
    pick = lambda given, key, default: given if given is not None else run.get(key, default)  # noqa: E731
    settings = ReportSettings(check_shown(args.metrics or run.get("metrics") or SHOWN),
                              pick(args.bootstrap, "bootstrap", DEFAULT_RESAMPLES), pick(args.seed, "seed", DEFAULT_SEED),
                              pick(args.gallery, "gallery", DEFAULT_GALLERY))  # fmt: skip
    _, table = score(folder, settings, args.edges, target)
    print(table)
    print(f"report: {(target / 'report.html').resolve()}")


REPORT_FILES = ("metrics.json", "metrics.csv", "summary.md", "strata.png", "report.html")


def new_folder(output: str) -> Path:
    """An `--output` folder that holds nothing yet (`report` and `compare`)."""
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target}: --output must be a new or empty folder (a report is never overwritten)")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{target}: --output cannot be made here ({e.strerror or e})") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(f"{target}: --output is not writable")
    return target


def report_folder(run_dir: Path, output: str | None, in_place: bool) -> Path:
    if in_place:
        return run_dir
    if output is not None:
        return new_folder(output)
    if not any((run_dir / name).exists() for name in REPORT_FILES):
        return run_dir  # a stopped run: its first report
    n = 1
    while True:
        try:
            (run_dir / "reports" / str(n)).mkdir(parents=True)  # claimed, also against a concurrent report
            return run_dir / "reports" / str(n)
        except FileExistsError:
            n += 1
        except OSError as e:
            raise ConfigError(f"{run_dir / 'reports'}: cannot hold a new report ({e.strerror or e}); "
                              "give --output a writable folder") from None
