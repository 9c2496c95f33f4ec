"""`g4seg predict --config FILE [--key value ...]`.

LightningCLI (YAML config, `--print_config`, dotted overrides); the writer and the scoring
callback are part of every run rather than optional callbacks because results on disk are
the product. Before any process starts, the run folder is claimed (checked against this
configuration, locked) so that a user mistake stops the run with one line.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..errors import ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.metrics import SHOWN
from ..report.gallery import DEFAULT_GALLERY
from . import parse_errors
from .failures import PLACE, RUN_FOLDER, report_failure
from .folder import RunFolder
from .hooks import FolderHooks, RefinerWorkers, Scoring
from .module import G4SegModule
from .preflight import preflight
from .progress import sample_progress_bar
from .stopping import StopOnSignal
from .writer import ResultWriter

PREDICT_HELP = ("Run every strategy of the config on the dataset and score it against the coarse masks. g4seg's "
                "own options come first; --model.* and --data.* are the config's keys; the --trainer.* options "
                "that matter here are accelerator, devices, num_nodes, strategy and precision.")


class G4SegParser(LightningArgumentParser):
    """Parse errors in one line (`parse_errors.one_line`); the full usage stays in --help."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        names = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        print(f"g4seg: error: {parse_errors.one_line(message, names)} (g4seg predict --help lists the options)",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


class G4SegCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/run", help="run folder; a rerun resumes")
        parser.add_argument("--save_generated", type=bool, default=False, help="write the generated images")
        parser.add_argument("--verbose", type=bool, default=False, help="also show Lightning's start-up lines and notes")
        parser.add_argument("--fresh", type=bool, default=False,
                            help="if output_dir holds another run, move it to OUTDIR.old-N and start again")  # fmt: skip
        parser.add_argument("--refiner_workers", type=Optional[int], default=None,
                            help="worker processes for CPU refiners such as DenseCRF (default: the free cores; 0: none)")  # fmt: skip
        parser.add_argument("--writer.background", type=Optional[bool], default=None,
                            help="counts, masks and records on a writer thread beside the model (default: on an accelerator)")  # fmt: skip
        parser.add_argument("--scoring.metrics", type=list[str], default=list(SHOWN),
                            help="table/plot metrics: miou boundary_iou mba miou_image")  # fmt: skip
        parser.add_argument("--scoring.bootstrap", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (0: none)")
        parser.add_argument("--scoring.seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
        parser.add_argument("--scoring.gallery", type=int, default=DEFAULT_GALLERY, help="best/worst samples per section in report.html")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.set_defaults({"trainer.logger": False, "trainer.enable_checkpointing": False})

    def before_instantiate_classes(self) -> None:
        """Every missing model, checkpoint and data folder of the config, listed at once,
        before seconds go into building the first model."""
        sub = self.subcommand
        config = json.loads(self._parser(sub).dump(self.config[sub] if sub else self.config, format="json", skip_none=False))
        preflight(config)
        if self._get(self.config, "verbose"):  # asked for in a config file rather than on the command line
            for name in LIBRARY_CHATTER:
                logging.getLogger(name).setLevel(logging.INFO)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
        """The run's owner and the two callbacks that write and score it belong to every run."""
        get = lambda key: self._get(self.config_init, key)  # noqa: E731
        self.folder = RunFolder(get("output_dir"), get("fresh"))
        RUN_FOLDER[:] = [str(self.folder.path)]
        scoring = get("scoring")
        scoring = dict(scoring) if not hasattr(scoring, "as_dict") else scoring.as_dict()
        stopper = StopOnSignal(self.folder.path, self.folder.progress)
        writer = ResultWriter(self.folder, save_generated=get("save_generated"), background=get("writer.background"),
                              stopper=stopper)  # fmt: skip
        stopper.before_stop = writer.abandon  # a stop keeps what is written, the result in hand included
        # the writer before FolderHooks: after a failure it drains while the folder is still locked;
        # StopOnSignal last: a batch's records are handed to the writer before a stop
        extra = [writer, FolderHooks(self.folder), RefinerWorkers(get("refiner_workers")), Scoring(self.folder, **scoring),
                 stopper]
        if config.get("enable_progress_bar") is not False:  # first: its teardown ends the bar before the summary
            extra.insert(0, sample_progress_bar())
        return super()._instantiate_trainer(config, [*callbacks, *extra])

    def before_predict(self) -> None:
        """Checks that need no model output, before any work and before DDP processes start:
        the dataset's ids, enough samples for every process, and the run folder (its
        fingerprint and lock). The resolved config (every default filled in) goes into run.json."""
        config = json.loads(self._parser("predict").dump(self.config["predict"], format="json", skip_none=False))
        record_resolved(config, self.model, self.datamodule)
        ids = self.datamodule.ids
        world = self.trainer.world_size
        if world > len(ids):
            raise ConfigError(
                f"{world} processes need at least {world} samples, the dataset has {len(ids)}; "
                f"use --trainer.devices {len(ids)} (or fewer)"
            )
        main = self.trainer.global_rank == 0
        PLACE.update(rank=self.trainer.global_rank, node=self.trainer.node_rank, nodes=self.trainer.num_nodes)
        self.folder.claim(config, list(ids), self.model.strategy_names, list(self.datamodule.class_names),
                          list(self.model.strata_edges), main=main)  # fmt: skip
        coarse = ((config.get("data") or {}).get("init_args") or {}).get("coarse")
        if main and coarse:
            from ..report.html import describe

            print(f"coarse masks from {describe(coarse)}", file=sys.stderr)
        if main and self._get(self.config_init, "save_generated"):
            print(f"g4seg: --save_generated: {generated_gap(self.folder, list(self.model.injectors))}", file=sys.stderr)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False  # results go to disk; keeping them would grow memory
        return kwargs


def generated_gap(folder: RunFolder, injectors: list[str]) -> str:
    """What `--save_generated` will write, said before the run: nothing without an injector,
    and nothing for samples an earlier run finished (a resume does not redo them)."""
    if not injectors:
        return "no strategy of this config generates images; nothing will be written"
    from ..files import safe_name

    written = {path.name.rsplit("_", 1)[0] for name in injectors for path in (folder.path / "generated" / name).glob("*.png")}
    missing = sum(safe_name(i) not in written for i in folder.done_ids)
    if not missing:
        return f"generated images of {', '.join(injectors)} go to {folder.path / 'generated'}"
    return (f"{missing} samples were finished by an earlier run without their generated images and are not redone; "
            "use another --output_dir (or --fresh true) to have them all")


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def record_resolved(config: dict, module: G4SegModule, datamodule) -> None:
    """The config states what ran: each part's init_args updated with the values the built
    object resolved (a preset's beta, a CRF preset's kernels), so run.json, the report and
    the resume fingerprint never show a value that was not used."""
    model = config.get("model") or {}
    for spec, node in zip(module.specs, model.get("strategies") or []):
        for refiner, refiner_node in zip(spec.refiners, node.get("refiners") or []):
            if isinstance(refiner_node, dict):
                refiner_node.setdefault("init_args", {}).update(_plain(refiner.resolved()))
    for name, injector in module.injectors.items():
        node = (model.get("injectors") or {}).get(name)
        if isinstance(node, dict):
            node.setdefault("init_args", {}).update(_plain(injector.resolved()))
    data = (config.get("data") or {}).get("init_args") or {}
    if data.get("root") and hasattr(datamodule, "root"):  # another folder under the same relative path is another run
        data["root"] = str(Path(datamodule.root).resolve())
    coarse = getattr(datamodule, "coarse", None)
    node = data.get("coarse")
    if isinstance(node, dict) and hasattr(coarse, "resolved"):
        node.setdefault("init_args", {}).update(_plain(coarse.resolved()))


LIBRARY_CHATTER = ("lightning.pytorch", "lightning.fabric")  # seed, GPU/TPU availability, tips
KEPT = "lightning.fabric.strategies.launchers"  # "child process terminated ... terminating all other processes"


def verbose_asked(args: list[str]) -> bool:
    return "--verbose=true" in [a.lower() for a in args] or any(
        a == "--verbose" and b.lower() == "true" for a, b in zip(args, args[1:]))  # fmt: skip


def quiet_libraries(verbose: bool) -> None:
    """Lightning's start-up lines (seed set, GPU/TPU available, a tip) and its deprecation
    notes about itself are no part of a g4seg run's output unless asked for (`--verbose true`)."""
    if verbose:
        return
    for name in LIBRARY_CHATTER:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(KEPT).setLevel(logging.INFO)
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries(verbose_asked(args))
    try:
        if args and args[0] == "predict":
            from .overrides import check_class_swaps

            check_class_swaps(args[1:])
        G4SegCLI(
            G4SegModule,
            parser_class=G4SegParser,
            parser_kwargs={"prog": "g4seg", "predict": {"description": PREDICT_HELP}},
            subclass_mode_data=True,
            save_config_callback=None,
            args=argv,  # None: LightningCLI reads sys.argv itself
            seed_everything_default=0,
        )
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the user error may be wrapped by jsonargparse/Lightning
        sys.exit(report_failure(e))


if __name__ == "__main__":
    main()
