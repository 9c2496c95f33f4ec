"""The `g4seg` command (`g4seg predict ...`, `g4seg report ...`); see `run/cli.py`.

The top-level help and `g4seg report` are served from here without importing Lightning or
the model libraries, so they answer at once."""

import sys
from pathlib import Path

USAGE = """usage: g4seg {predict,report,compare} ...

Compare mask-refinement strategies on coarse segmentation masks.

commands:
  predict   run strategies on a dataset: g4seg predict --config FILE [--key value ...]
            (g4seg predict --help lists every option)
  report    rebuild tables, plots and report.html from a run folder's records:
            g4seg report OUTDIR [--edges ...] [--metrics ...] [--bootstrap N]
  compare   which strategy wins where, across run folders of one dataset:
            g4seg compare RUN_A RUN_B [...] [--metric miou] [--output DIR]
"""


def config_files(args: list[str]) -> list[str]:
    """The paths given as `--config PATH` or `--config=PATH`."""
    found = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    return found + [b for a, b in zip(args, args[1:]) if a == "--config"]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        if not args:
            sys.exit(2)
        return
    if args[0] in ("report", "compare"):  # no Lightning, no torch: they answer in about a second
        from .run.failures import report_failure

        try:
            if args[0] == "report":
                from .run.report_command import report_main

                return report_main(args[1:])
            from .run.compare_command import compare_main

            return compare_main(args[1:])
        except Exception as e:  # noqa: BLE001 - one line for what a user can fix, a traceback for bugs
            sys.exit(report_failure(e))
    if args[0] != "predict":
        print(f"{USAGE}g4seg: error: unknown command {args[0]!r} (choose predict, report or compare)", file=sys.stderr)
        sys.exit(2)
    missing = [path for path in config_files(args[1:]) if not Path(path).is_file()]
    if missing:  # the commonest mistake, answered before Lightning loads
        print(f"g4seg: error: {missing[0]}: config file does not exist", file=sys.stderr)
        sys.exit(2)
    from .run.early_checks import early_checks
    from .run.failures import report_failure

    try:  # the commonest mistakes in about a second, before Lightning and the model libraries load
        early_checks(args[1:])
    except Exception as e:  # noqa: BLE001 - one line for what a user can fix, a traceback for bugs
        sys.exit(report_failure(e))
    from .run.cli import main as run

    run(argv)  # None: Lightning reads sys.argv itself


if __name__ == "__main__":
    main()
