"""The run folder, and its one owner.

`RunFolder` is the only object that decides what a folder holds: it fingerprints the run,
locks the folder, writes run.json, knows which samples are done and loads the records,
once. The CLI creates it and hands it to the datamodule (`skip_ids`), the writer (where to
write) and the scoring callback (what to read); used without the CLI it claims the folder
itself when the Trainer sets up.

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
import sys
from pathlib import Path

from ..errors import RunFolderError
from ..evaluation.records import RECORDS, check_class_ids, load_results, read_record, record_path, stored_ids
from ..files import FULL, atomic_write_json, file_digest, no_space, open_no_follow
from ..types import BASELINE, SampleResult

MANIFEST = "run.json"
FINGERPRINT_VERSION = 3  # 3: records hold their input files and no initial IoUs (derived from the counts)
# resolved-config keys that cannot change a number (prefixes of dotted keys)
NOT_NUMBERS = (
    "trainer", "output_dir", "save_generated", "verbose", "fresh", "refiner_workers", "writer", "scoring", "ckpt_path", "return_predictions", "config",
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
        if Path(out_dir, RECORDS).is_dir() and any(Path(out_dir, RECORDS).iterdir()):
            raise RunFolderError(f"{out_dir} holds records but no {MANIFEST}; use another output folder or --fresh true")
        return False
    before = old.get("fingerprint", {})
    if before.get("version") != FINGERPRINT_VERSION:
        raise RunFolderError(
            f"{out_dir} holds a run written by an older g4seg (run folder version {before.get('version', 1)}, "
            f"now {FINGERPRINT_VERSION}); its records cannot be resumed: use another --output_dir, or --fresh true "
            "to move it aside"
        )
    keys = differing_keys(before, manifest["fingerprint"])
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
        try:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            if e.errno in FULL:
                raise no_space(self.path, 0, e) from None
            raise RunFolderError(f"{self.path}: cannot open the run lock ({e.strerror}; a symbolic link is refused); "
                                 "remove it or use another --output_dir") from None  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent}: another g4seg run (pid {holder}) is writing to this folder; "
                "wait for it or use another --output_dir"
            ) from None
        pid = str(os.getpid()).encode()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, pid)
        except OSError as e:  # the pid is only shown to a second run; the lock itself holds
            if e.errno not in FULL:
                raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RunFolder:
    """Args:
    path: the run folder; rerunning the same configuration into it resumes.
    fresh: if the folder holds another run, move it to OUTDIR.old-N instead of refusing.
    """

    def __init__(self, path: str | Path = "outputs/run", fresh: bool = False) -> None:
        self.path = Path(path)
        self.fresh = fresh
        self.manifest: dict | None = None
        self.ids: list[str] = []
        self.lock: FolderLock | None = None
        self._results: dict[str, SampleResult] = {}  # loaded once each

    @property
    def claimed(self) -> bool:
        return self.manifest is not None

    @property
    def done_ids(self) -> frozenset[str]:
        return frozenset(self._results)

    # -- claiming -----------------------------------------------------------------------------
    def claim(self, config: dict | None, ids: list[str], strategies: list[str], class_names: list[str],
              edges: list[float], main: bool = True) -> None:  # fmt: skip
        """Makes the folder this run's, before any work: the main process moves an old run
        aside (fresh), locks, checks and writes run.json; other processes only check that it
        matches. Then the records already there are loaded (and checked), once."""
        manifest = {"strategies": list(strategies), "class_names": list(class_names), "strata_edges": list(edges),
                    "ids": list(ids), "fingerprint": fingerprint(config, ids, strategies, class_names, edges)}  # fmt: skip
        if config is not None:
            manifest["config"] = config
        if main:
            self._claim_main(manifest)
        else:
            check_resumable(self.path, manifest)
        self.manifest, self.ids = manifest, list(ids)
        self._results = {r.id: self._complete(r) for r in load_results(self.path, self.ids)}
        self._drop_stale(main)
        if self._results and main:
            print(f"g4seg: resuming in {self.path}: {len(self._results)} samples already done, skipping them",
                  file=sys.stderr)  # fmt: skip

    def _claim_main(self, manifest: dict) -> None:
        out = self.path
        if self.fresh and out.exists() and any(out.iterdir()):
            if (out / LOCK).exists():  # a running run holds it: never move its folder away under it
                held = FolderLock(out)
                held.acquire()
                held.release()
            moved = move_aside(out)
            print(f"g4seg: moved the previous run in {out} to {moved}")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            os.close(open_no_follow(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            probe.unlink()
        except OSError as e:
            if e.errno in FULL:
                raise no_space(out / ".write-test", 0, e) from None
            raise RunFolderError(f"{out}: output folder is not writable ({e.strerror}); choose another --output_dir") from None
        lock = FolderLock(out)
        lock.acquire()
        try:
            check_resumable(out, manifest)
            atomic_write_json(out / MANIFEST, manifest)
        except BaseException:
            lock.release()
            raise
        self.lock = lock

    def _drop_stale(self, main: bool) -> None:
        """A record computed from an input file that has changed since (or gone) is recomputed:
        the bytes each sample was computed from are hashed as they are read, and hashed again
        here (0.16 s for VOC val's 1,449 images and ground truths, 141 MB, from a warm cache)."""
        stale = {}
        for sample_id, result in self._results.items():
            changed = [path for path, digest in result.digests.items() if file_digest(path) != digest]
            if changed:
                stale[sample_id] = changed[0]
        for sample_id in stale:
            del self._results[sample_id]
            if main:
                record_path(self.path, sample_id).unlink(missing_ok=True)
        if stale and main:
            first = next(iter(stale.values()))
            print(f"g4seg: {len(stale)} samples' input files changed since they were computed (e.g. {first}); "
                  "recomputing them", file=sys.stderr)  # fmt: skip

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- reading --------------------------------------------------------------------------------
    def results(self) -> list[SampleResult]:
        """Every stored result of the run's ids, in id order: those loaded at the claim, and
        those written since (each record file read once)."""
        for sample_id in stored_ids(self.path, self.ids):
            if sample_id not in self._results:
                self._results[sample_id] = self._complete(read_record(record_path(self.path, sample_id)))
        return [self._results[i] for i in self.ids if i in self._results]

    def progress(self) -> str:
        done = len(stored_ids(self.path, self.ids))
        return f"{done} of {len(self.ids)} samples are done and kept in {self.path}"

    def _complete(self, result: SampleResult) -> SampleResult:
        """A scored record holds counts for the baseline and every strategy of the run."""
        wanted = [BASELINE, *(self.manifest or {}).get("strategies", [])]
        missing = [name for name in wanted if name not in result.counts]
        if result.unscored_reason is None and missing:
            raise RunFolderError(f"{record_path(self.path, result.id)}: no counts for {', '.join(missing)}; "
                                 "delete it to recompute that sample")  # fmt: skip
        classes = (self.manifest or {}).get("class_names")
        if classes:
            check_class_ids(result, len(classes), record_path(self.path, result.id))
        return result

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """A finished (or interrupted) run, for reading: `g4seg report`."""
        folder = cls(path)
        manifest = read_manifest(folder.path)
        if manifest is None:
            raise RunFolderError(f"{folder.path}: no {MANIFEST}; not a g4seg predict output folder")
        folder.manifest = manifest
        folder.ids = list(manifest.get("ids") or [])
        if not folder.ids:  # a manifest without ids: every record in the folder
            folder._results = {r.id: folder._complete(r) for r in load_results(folder.path)}
            folder.ids = sorted(folder._results)
        return folder

    # -- a Trainer without the CLI: the folder claims itself when the Trainer sets up (`hooks.py`)
    def claim_for(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if not self.claimed:
            if dm is None or not hasattr(dm, "ids"):
                raise RunFolderError("a RunFolder needs a datamodule with an `ids` list")
            args = (list(dm.ids), pl_module.strategy_names, list(dm.class_names), list(pl_module.strata_edges))
            if trainer.world_size > 1:  # every rank checks the same files first, so all reach the same verdict
                check_resumable(self.path, {"fingerprint": fingerprint(None, *args)})
                trainer.strategy.barrier("g4seg-run-checked")
            self.claim(None, *args, main=trainer.is_global_zero)
        if dm is not None and hasattr(dm, "skip_ids"):
            dm.skip_ids = self.done_ids
