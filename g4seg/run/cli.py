"""`g4seg predict --config FILE [--key value ...]` and `g4seg report OUTDIR`.

`predict` is LightningCLI (YAML config, `--print_config`, dotted overrides); the writer and
the scoring callback are part of every run rather than optional callbacks because results
on disk are the product. Before any process starts, the run folder is claimed (checked
against this configuration, locked) so that a user mistake stops the run with one line.
`report` rebuilds the tables and plot from the per-sample records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..errors import USER_ERRORS, ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from ..evaluation.metrics import SHOWN
from .folder import RunFolder
from .module import G4SegModule
from .scoring import Scoring
from .stopping import RunStopped, StopOnSignal
from .writer import ResultWriter


class G4SegCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/run", help="run folder; a rerun resumes")
        parser.add_argument("--save_generated", type=bool, default=False, help="write the generated images")
        parser.add_argument("--fresh", type=bool, default=False,
                            help="if output_dir holds another run, move it to OUTDIR.old-N and start again")  # fmt: skip
        parser.add_argument("--scoring.metrics", type=list[str], default=list(SHOWN),
                            help="table/plot metrics: miou boundary_iou mba miou_image")  # fmt: skip
        parser.add_argument("--scoring.bootstrap", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (0: none)")
        parser.add_argument("--scoring.seed", type=int, default=DEFAULT_SEED, help="bootstrap seed")
        parser.add_argument("--scoring.gallery", type=int, default=12, help="best/worst samples per section in report.html")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.set_defaults({"trainer.logger": False, "trainer.enable_checkpointing": False})

    def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
        """The run's owner and the two callbacks that write and score it belong to every run."""
        get = lambda key: self._get(self.config_init, key)  # noqa: E731
        self.folder = RunFolder(get("output_dir"), get("fresh"))
        scoring = get("scoring")
        scoring = dict(scoring) if not hasattr(scoring, "as_dict") else scoring.as_dict()
        extra = [self.folder, ResultWriter(self.folder, save_generated=get("save_generated")), Scoring(self.folder, **scoring),
                 StopOnSignal(self.folder.progress)]  # last: a batch's records are written before a stop  # fmt: skip
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

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("return_predictions") is None:
            kwargs["return_predictions"] = False  # results go to disk; keeping them would grow memory
        return kwargs


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


def report_main(argv: list[str]) -> None:
    from ..report.write import ReportSettings, check_shown
    from .scoring import score

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


def causes(exc: BaseException | None):
    """`exc` and the exceptions it was raised from or while handling, once each."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def user_error(exc: BaseException | None) -> BaseException | None:
    """The user-fixable error behind `exc`, also when a library wrapped or chained it."""
    return next((e for e in causes(exc) if isinstance(e, USER_ERRORS)), None)


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def peer_failed(exc: BaseException | None) -> bool:
    """A collective broke because another process of a DDP run stopped."""
    return any(isinstance(e, RuntimeError) and any(p in str(e) for p in PEER_GONE) for e in causes(exc))


def one_line(exc: BaseException) -> str:
    """The message alone; a DataLoader worker re-raises with its traceback in the message."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(("g4seg.", "datamodules.", "strategies.")) else last
    return text


# where this process sits in the run; the Trainer fills it in, the environment stands in before
PLACE: dict[str, int] = {}


def _env_int(*names: str) -> int | None:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def place() -> tuple[int, int, int]:
    """(global rank, node rank, number of nodes) under Lightning's launcher, torchrun or SLURM."""
    rank = PLACE.get("rank", _env_int("RANK", "SLURM_PROCID", "LOCAL_RANK") or 0)
    node = PLACE.get("node", _env_int("NODE_RANK", "GROUP_RANK", "SLURM_NODEID") or 0)
    nodes = PLACE.get("nodes", max(_env_int("SLURM_NNODES", "GROUP_WORLD_SIZE") or 1, node + 1))
    return rank, node, nodes


def process_label() -> str:
    """"" for the only (or first) process of a one-machine run; else "process R[, node N]"."""
    rank, node, nodes = place()
    return f"process {rank}, node {node}" if nodes > 1 else (f"process {rank}" if rank else "")


def report_failure(exc: BaseException) -> int:
    """One line for what a user can act on, and its exit code; raises what is a bug."""
    label = process_label()
    stopped = next((e for e in causes(exc) if isinstance(e, RunStopped)), None)
    if stopped is not None:  # every process stopped together; the first one says so
        if not label or place()[0] == 0:
            print(f"g4seg: {stopped}", file=sys.stderr)
        return stopped.exit_code
    found = user_error(exc)
    if found is None and peer_failed(exc):
        where = "on its node's terminal" if place()[2] > 1 else "above"
        print(f"g4seg: {label or 'process 0'} stopped because another process of this run ended; if that one failed, "
              f"its 'g4seg: error (process N...)' line is {where}, otherwise it was killed", file=sys.stderr)  # fmt: skip
        return 2
    if found is None:
        raise exc
    print(f"g4seg: error ({label}): " if label else "g4seg: error: ", one_line(found), sep="", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
    try:
        if args and args[0] == "report":
            return report_main(args[1:])
        if args and args[0] == "predict":
            from .overrides import check_class_swaps

            check_class_swaps(args[1:])
        G4SegCLI(
            G4SegModule,
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
