"""The `g4seg` command (`g4seg predict ...`, `g4seg report ...`); see `run/cli.py`.

The top-level help is printed from here, before Lightning and the model libraries are
imported, so `g4seg --help` answers at once."""

import sys

USAGE = """usage: g4seg {predict,report} ...

Compare mask-refinement strategies on coarse segmentation masks.

commands:
  predict   run strategies on a dataset: g4seg predict --config FILE [--key value ...]
            (g4seg predict --help lists every option)
  report    rebuild tables, plots and report.html from a run folder's records:
            g4seg report OUTDIR [--edges ...] [--metrics ...] [--bootstrap N]
"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        if not args:
            sys.exit(2)
        return
    from .run.cli import main as run

    run(args)


if __name__ == "__main__":
    main()
