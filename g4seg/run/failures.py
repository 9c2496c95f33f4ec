"""How a failed command ends: one line a user can act on, with the process (and node) it
happened in, and the exit code; a bug keeps its traceback. Without Lightning, so every
command shares it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import USER_ERRORS, RunStopped
from .stop_file import STOP, signal_in


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
RUN_FOLDER: list[str] = []  # the predict run's folder, once known (its stop file)


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
    if stopped is not None:  # each process stops after its own batch in flight; process 0 says so
        if place()[0] != 0:  # Lightning's launcher kills every process when another ends with an error code
            return 0
        print(f"g4seg: {stopped}", file=sys.stderr)
        return stopped.exit_code
    found = user_error(exc)
    signalled = signal_in(Path(RUN_FOLDER[0]) / STOP) if RUN_FOLDER else None
    if found is None and peer_failed(exc) and signalled is not None:  # it ended on a signal while this one waited
        print(f"g4seg: {RunStopped(signalled, 'another process of the run received it')}", file=sys.stderr)
        return RunStopped(signalled).exit_code
    if found is None and peer_failed(exc):
        where = "on its node's terminal" if place()[2] > 1 else "above"
        print(f"g4seg: {label or 'process 0'} stopped because another process of this run ended; if that one failed, "
              f"its 'g4seg: error (process N...)' line is {where}, otherwise it was killed", file=sys.stderr)  # fmt: skip
        return 2
    if found is None:
        raise exc
    print(f"g4seg: error ({label}): " if label else "g4seg: error: ", one_line(found), sep="", file=sys.stderr)
    return 2
