"""`g4seg predict --config FILE [--key value ...]` and `g4seg report OUTDIR`.

`predict` is LightningCLI (YAML config, `--print_config`, dotted overrides); the writer
is part of every run rather than an optional callback because results on disk are the
product. `report` rebuilds the tables and plot from the per-sample records.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .errors import USER_ERRORS
from .module import G4SegModule
from .writer import ResultWriter


class G4SegCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResultWriter, "writer")
        parser.add_argument("--output_dir", type=str, default="outputs/run", help="run folder; a rerun resumes")
        parser.add_argument("--save_generated", type=bool, default=False, help="write the generated images")
        parser.link_arguments("output_dir", "writer.output_dir")
        parser.link_arguments("save_generated", "writer.save_generated")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.set_defaults({"trainer.logger": False, "trainer.enable_checkpointing": False})

    def before_predict(self) -> None:
        """The resolved config (every default filled in) goes into run.json, so a run folder
        says exactly what produced it."""
        import json

        config = json.loads(self._parser("predict").dump(self.config["predict"], format="json", skip_none=False))
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResultWriter):
                callback.config = config

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False  # results go to disk; keeping them would grow memory
        return kwargs


def report_main(argv: list[str]) -> None:
    from .report import rebuild

    parser = argparse.ArgumentParser(prog="g4seg report", description="rebuild tables and plot from records")
    parser.add_argument("output_dir")
    parser.add_argument("--edges", type=float, nargs="+", help="strata edges in percent, e.g. 0 40 80 100")
    args = parser.parse_args(argv)
    _, table = rebuild(args.output_dir, args.edges)
    print(table)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "report":
        return report_main(args[1:])
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    try:
        G4SegCLI(
            G4SegModule,
            subclass_mode_data=True,
            save_config_callback=None,
            args=argv,  # None: LightningCLI reads sys.argv itself
            seed_everything_default=0,
        )
    except USER_ERRORS as e:
        print(f"g4seg: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
