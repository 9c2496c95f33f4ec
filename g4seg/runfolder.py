"""The run folder's identity: what produced it (run.json), who is writing it (a lock), and
whether a rerun may resume it.

A rerun resumes only when its fingerprint (everything that affects the numbers: dataset
root and exact id list, coarse source, classes, every strategy's injector and refiner
parameters and models, strata edges) equals the stored one; otherwise it is refused with
the keys that differ, or, with `--fresh true`, the old folder is moved aside. Settings
that do not change the numbers (devices, batch size, workers, where files go) may change.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from .errors import RunFolderError
from .records import MANIFEST, atomic_write_json

FINGERPRINT_VERSION = 2  # 2: records hold boundary counts
# resolved-config keys that cannot change a number (prefixes of dotted keys)
NOT_NUMBERS = (
    "trainer", "output_dir", "save_generated", "fresh", "writer", "scoring", "ckpt_path", "return_predictions", "config",
    "data.init_args.batch_size", "data.init_args.num_workers",
)  # fmt: skip
LOCK = ".lock"


def flatten(node, prefix: str = "") -> dict[str, object]:
    """{"a.b[0].c": value} for every leaf of nested dicts and lists."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: node}


def fingerprint(config: dict | None, ids: list[str], strategies: list[str], class_names: list[str],
                edges: list[float]) -> dict[str, object]:  # fmt: skip
    """The flat dict two runs must share to be one run."""
    flat = {k: v for k, v in flatten(config or {}).items() if not k.startswith(NOT_NUMBERS)}
    flat.update({
        "version": FINGERPRINT_VERSION,
        "dataset ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] + f" ({len(ids)} ids)",
        "strategies": list(strategies), "class names": list(class_names), "strata edges": [float(e) for e in edges],
    })  # fmt: skip
    return json.loads(json.dumps(flat))  # as it reads back from run.json


def differing_keys(old: dict, new: dict) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))


def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: unreadable run manifest ({e}); use another output folder") from None
    if not isinstance(manifest, dict) or "strategies" not in manifest or "class_names" not in manifest:
        raise RunFolderError(f"{path}: not a g4seg run manifest; use another output folder")
    return manifest


def check_resumable(out_dir: Path, manifest: dict) -> bool:
    """True when `out_dir` holds this very run (resume), False when it holds none; raises otherwise."""
    old = read_manifest(out_dir)
    if old is None:
        if Path(out_dir, "records").is_dir() and any(Path(out_dir, "records").iterdir()):
            raise RunFolderError(f"{out_dir} holds records but no {MANIFEST}; use another output folder or --fresh true")
        return False
    keys = differing_keys(old.get("fingerprint", {}), manifest["fingerprint"])
    if keys:
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        raise RunFolderError(
            f"{out_dir} holds a run with another configuration (differs in: {shown}); "
            "use another --output_dir, or --fresh true to move the old run aside and start again"
        )
    return True


def move_aside(out_dir: Path) -> Path:
    """OUTDIR -> OUTDIR.old-N (the first free N); nothing is deleted."""
    n = 1
    while Path(f"{out_dir}.old-{n}").exists():
        n += 1
    target = Path(f"{out_dir}.old-{n}")
    os.replace(out_dir, target)
    return target


class FolderLock:
    """An exclusive flock on OUTDIR/.lock for the life of the run. The kernel drops it
    when the process dies, so a killed run never leaves a stale lock behind."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent}: another g4seg run (pid {holder}) is writing to this folder; "
                "wait for it or use another --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def claim(out_dir: Path, manifest: dict, fresh: bool = False) -> FolderLock:
    """Makes `out_dir` this run's folder: writable, locked, and new or holding this very run."""
    out_dir = Path(out_dir)
    if fresh and out_dir.exists() and any(out_dir.iterdir()):
        moved = move_aside(out_dir)
        print(f"g4seg: moved the previous run in {out_dir} to {moved}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(f"{out_dir}: output folder is not writable ({e.strerror}); choose another --output_dir") from None
    lock = FolderLock(out_dir)
    lock.acquire()
    try:
        check_resumable(out_dir, manifest)
        atomic_write_json(out_dir / MANIFEST, manifest)
    except BaseException:
        lock.release()
        raise
    return lock
