"""Per-sample records on disk: enough to recompute every metric exactly.

One JSON file per sample, written atomically; its existence marks the sample done.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .types import SampleResult, SourceCounts

RECORDS = "records"
MANIFEST = "run.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then rename: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
        "skipped_reason": result.skipped_reason,
        "initial_iou": {str(c): v for c, v in result.initial_iou.items()},
        "counts": {
            name: {"inter": {str(c): n for c, n in sc.inter.items()}, "union": {str(c): n for c, n in sc.union.items()}}
            for name, sc in result.counts.items()
        },
        "seconds": result.seconds,
        "random_weights": result.random_weights,
        "notes": result.notes,
    }


def from_record(record: dict) -> SampleResult:
    """The parts of a SampleResult that metrics need (no label maps)."""
    ints = lambda d: {int(k): int(v) for k, v in d.items()}  # noqa: E731
    return SampleResult(
        id=record["id"],
        labels={},
        counts={name: SourceCounts(ints(c["inter"]), ints(c["union"])) for name, c in record["counts"].items()},
        initial_iou={int(k): float(v) for k, v in record["initial_iou"].items()},
        seconds=record.get("seconds", {}),
        random_weights=record.get("random_weights", []),
        notes=record.get("notes", {}),
        skipped_reason=record.get("skipped_reason"),
    )


def load_records(out_dir: Path) -> list[dict]:
    folder = out_dir / RECORDS
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: corrupt record ({e}); delete it to recompute that sample") from None
    return records
