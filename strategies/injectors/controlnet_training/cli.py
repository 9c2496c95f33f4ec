"""The fine-tuning command (`scripts/finetune_controlnet.py` is its entry point): LightningCLI
over the module and the data, CSV (+ TensorBoard) logs and checkpoints in the output folder,
the validation loss before the first step, the ControlNet folder written at the end."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from g4seg.errors import ConfigError
from g4seg.models import hub
from g4seg.models.diffusion import CONTROLNET_REPO

from .checkpoint_io import AtomicCheckpointIO
from .examples import ControlNetTrainingData
from .module import ControlNetFineTuning


SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the seg ControlNet's base model
SIGTERM_EXIT, SIGINT_EXIT = 143, 130  # 128 + the signal, what schedulers and shells expect


class CheckpointOnStop(Callback):
    """SIGTERM (a scheduler's time limit) or Ctrl-C ends training after the step in flight
    (Lightning's signal handling); the state of that step is saved as checkpoints/last.ckpt,
    so `--ckpt_path last` loses nothing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stopped_at: int | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        path = self.folder / "last.ckpt"
        if trainer.is_global_zero and path.is_symlink():
            path.unlink()
        trainer.save_checkpoint(path)
        self.stopped_at = trainer.global_step
        if trainer.is_global_zero:
            what = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
            print(f"g4seg: {what}: stopped after step {trainer.global_step}, saved {path}; resume with the same "
                  "command and --ckpt_path last", flush=True)  # fmt: skip


class FinetuneCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/finetune/controlnet",
                            help="the ControlNet folder, logs and checkpoints go here")  # fmt: skip
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="resume: a checkpoint, or 'last'")
        parser.add_argument("--checkpoint_every", type=int, default=500, help="steps between checkpoints")

    def before_instantiate_classes(self) -> None:
        """A rerun resumes from the folder's last checkpoint; every missing model or dataset
        folder in one error, before anything loads."""
        out = Path(self.config["output_dir"])
        if self.config["ckpt_path"] is None and (out / "checkpoints" / "last.ckpt").is_file():
            self.config["ckpt_path"] = "last"
        model, data = self.config.get("model", {}), self.config.get("data", {})
        hub.require_all([
            (model.get("model"), "folder", "the diffusion model", hub.hub_command(SD15_REPO), "model.model"),
            (model.get("controlnet"), "folder", "the ControlNet", hub.hub_command(CONTROLNET_REPO), "model.controlnet"),
            (data.get("root"), "folder", "the dataset", "python scripts/prepare_datasets.py --help (VOC layout)", "data.root"),
        ])  # fmt: skip
        try:  # after the models are found: a mistyped path leaves no folder behind
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{out}: --output_dir cannot hold the run ({e.strerror or e}); choose another") from None

    def instantiate_trainer(self, **kwargs):
        out = Path(self.config["output_dir"])
        trainer = self.config.get("trainer", {})
        kwargs["default_root_dir"] = str(out)
        if trainer.get("logger") in (None, True):  # CSV always; TensorBoard as well where it is installed
            version = ""  # logs/metrics.csv; each resume logs beside it (Lightning's CSV logger would clear it)
            if self.config["ckpt_path"]:
                version = f"resumed-{sum(1 for p in (out / 'logs').glob('resumed-*')) + 1}"
            loggers = [CSVLogger(out, name="logs", version=version)]
            if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
                loggers.append(TensorBoardLogger(out, name="tensorboard", version=version))
            kwargs["logger"] = loggers
        every = int(self.config["checkpoint_every"])
        kwargs["callbacks"] = [ModelCheckpoint(dirpath=out / "checkpoints", filename="{step}", save_last=True,
                                               every_n_train_steps=every, save_top_k=-1),
                               CheckpointOnStop(out / "checkpoints")]  # fmt: skip
        kwargs["plugins"] = [*(trainer.get("plugins") or []), AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def main(argv: list[str] | None = None) -> dict:
    # the training sampler resumes where the checkpoint's step left it (ControlNetTrainingData.loader)
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    cli = FinetuneCLI(ControlNetFineTuning, ControlNetTrainingData, run=False, args=argv,
                      save_config_kwargs={"overwrite": True}, seed_everything_default=0)  # fmt: skip
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    out, ckpt = Path(cli.config["output_dir"]), cli.config["ckpt_path"]
    model.check_resolution(data.resolution)
    data.setup("fit")
    if ckpt == "last" and trainer.is_global_zero:
        print(f"resuming from {out / 'checkpoints' / 'last.ckpt'} (another --output_dir starts anew)", flush=True)
    before = None
    if data.val is not None and ckpt is None:  # the validation loss before any step, for the curve
        before = float(trainer.validate(model, datamodule=data, verbose=False)[0]["val_loss"])
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt)
    except SIGTERMException:
        raise SystemExit(SIGTERM_EXIT) from None
    except SystemExit as e:  # Lightning ends a Ctrl-C with exit(1): say it was the signal
        stopped = any(isinstance(c, CheckpointOnStop) and c.stopped_at is not None for c in trainer.callbacks)
        raise SystemExit(SIGINT_EXIT if stopped else e.code) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"val_loss_before": before, "val_loss_after": metrics.get("val_loss"), "train_loss_last": metrics.get("train_loss"),
              "steps": int(trainer.global_step)}  # fmt: skip
    if trainer.is_global_zero:
        info = {"data": data.describe(), "losses": result, "global_batch": data.batch_size * trainer.world_size
                * trainer.accumulate_grad_batches, "precision": str(trainer.precision), "processes": trainer.world_size}  # fmt: skip
        folder = model.save_controlnet(out / "controlnet", info)
        after = result["val_loss_after"]
        val = (f"validation loss {before:.4f} -> {after:.4f}; " if before is not None and after is not None else
               f"validation loss before {before:.4f} (no validation ran after it); " if before is not None else "")  # fmt: skip
        print(f"{result['steps']} steps; {val}ControlNet: {folder} (use it as ControlNetInjection controlnet: "
              f"{folder}); loss curve: {out / 'logs'}")  # fmt: skip
    return result
