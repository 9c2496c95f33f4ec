"""SIGTERM and SIGINT stop a predict run after the batch in flight, on every process.

Cluster schedulers end jobs with SIGTERM and users press Ctrl-C; either must leave whole
records and a folder that the same command resumes. Lightning's own SIGTERM handler only
sets a flag that `predict` never reads, and it broadcasts from inside the handler, which
deadlocks a DDP run when the signal reaches one process only. So this callback replaces
it while the run predicts: the handler only notes the signal (nothing else is safe inside
a handler); after each batch has been written the processes agree, with one collective,
whether any of them was signalled, and all stop together by raising `RunStopped`. A second
signal of the same kind is not caught again and ends the process at once.
"""

from __future__ import annotations

import signal

from lightning.pytorch.callbacks import Callback

from ..errors import RunStopped

CAUGHT = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(Callback):
    """Args:
    progress: says how far the run got (the run folder's count of finished samples).
    """

    def __init__(self, progress=None) -> None:
        self.progress = progress
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _note(self, signum: int, frame) -> None:
        self.received = self.received or signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one acts at once

    def _install(self) -> None:
        for signum in CAUGHT:
            current = signal.getsignal(signum)
            if current != self._note:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._note)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _check(self, trainer) -> None:
        """Every process calls this at the same point, so the one collective always pairs up."""
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            progress = self.progress() if self.progress is not None else ""
            raise RunStopped(self.received or signal.SIGTERM, progress)  # or: the signal reached another process

    # Lightning hooks: installed as early as the Trainer allows, and again after Lightning
    # registered its own SIGTERM handler (just before predicting starts).
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._install()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._install()
        self._check(trainer)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._check(trainer)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()
