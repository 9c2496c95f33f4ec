"""Per-sample records on disk: enough to recompute every metric exactly.

One JSON file per sample, written atomically; its existence marks the sample done.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import RecordError
from .types import SampleResult, SourceCounts

RECORDS = "records"
COUNT_KEYS = ("inter", "union", "b_inter", "b_union", "ba")
MANIFEST = "run.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then rename: a killed run never leaves half a file.
    The file gets the mode a plain open() would give (0666 less the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode())


def safe_name(sample_id: str) -> str:
    return sample_id.replace(os.sep, "__")


def record_path(out_dir: Path, sample_id: str) -> Path:
    return out_dir / RECORDS / f"{safe_name(sample_id)}.json"


def to_record(result: SampleResult) -> dict:
    return {
        "id": result.id,
        "unscored_reason": result.unscored_reason,
        "initial_iou": {str(c): v for c, v in result.initial_iou.items()},
        "counts": {
            name: {key: {str(c): n for c, n in getattr(sc, key).items()} for key in COUNT_KEYS}
            for name, sc in result.counts.items()
        },
        "seconds": result.seconds,
        "random_weights": result.random_weights,
        "notes": result.notes,
    }


def from_record(record: dict) -> SampleResult:
    """The parts of a SampleResult that metrics need (no label maps)."""
    ints = lambda d: {int(k): int(v) for k, v in d.items()}  # noqa: E731
    counts = {}
    for name, c in record["counts"].items():
        if any(key not in c for key in COUNT_KEYS):
            raise RecordError(f"record of {record['id']!r} has no boundary counts (written by an older g4seg); "
                              "rerun with --fresh true")  # fmt: skip
        counts[name] = SourceCounts(ints(c["inter"]), ints(c["union"]), ints(c["b_inter"]), ints(c["b_union"]),
                                    {int(k): float(v) for k, v in c["ba"].items()})  # fmt: skip
    return SampleResult(
        id=record["id"],
        labels={},
        counts=counts,
        initial_iou={int(k): float(v) for k, v in record["initial_iou"].items()},
        seconds=record.get("seconds", {}),
        random_weights=record.get("random_weights", []),
        notes=record.get("notes", {}),
        unscored_reason=record.get("unscored_reason", record.get("skipped_reason")),  # older records: skipped_reason
    )


def dataset_ids(trainer) -> list[str] | None:
    """The ids the trainer's datamodule scores, when it lists them."""
    dm = getattr(trainer, "datamodule", None)
    return list(dm.ids) if dm is not None and hasattr(dm, "ids") else None


REQUIRED = ("id", "counts", "initial_iou")


def load_records(out_dir: Path, ids: list[str] | None = None) -> list[dict]:
    """The records of `ids` (all records when None), each once, in id order.

    Records of other ids in the folder are not counted: numbers cover exactly the dataset
    being scored.
    """
    folder = Path(out_dir) / RECORDS
    wanted = None if ids is None else {safe_name(i): i for i in ids}
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if wanted is not None and path.stem not in wanted:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError(f"{path}: corrupt record ({e}); delete it to recompute that sample") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            raise RecordError(f"{path}: not a complete record (needs {', '.join(REQUIRED)}); delete it to recompute that sample")
        if safe_name(str(record["id"])) != path.stem:
            raise RecordError(f"{path}: holds sample {record['id']!r}, not {path.stem!r}; delete it to recompute that sample")
        records.append(record)
    if wanted is not None:
        order = {i: n for n, i in enumerate(ids)}
        records.sort(key=lambda r: order[r["id"]])
    return records
