"""Per-sample records on disk: the single source of every number a run reports.

One JSON file per sample, written atomically after the sample's masks; its existence
marks the sample done. A record holds the sample's per-class counts for the baseline and
every strategy, its timings, notes, and the files it was read from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import RecordError
from ..files import safe_name
from ..types import SampleResult, SourceCounts

RECORDS = "records"
COUNT_KEYS = ("inter", "union", "b_inter", "b_union", "ba", "gt")
INT_KEYS = ("inter", "union", "b_inter", "b_union", "gt")
REQUIRED = ("id", "counts")


def record_path(out_dir: Path, sample_id: str) -> Path:
    return Path(out_dir) / RECORDS / f"{safe_name(sample_id)}.json"


def to_record(result: SampleResult) -> dict:
    return {
        "id": result.id,
        "unscored_reason": result.unscored_reason,
        "counts": {
            name: {key: {str(c): n for c, n in getattr(sc, key).items()} for key in COUNT_KEYS}
            for name, sc in result.counts.items()
        },
        "seconds": result.seconds,
        "random_weights": result.random_weights,
        "notes": result.notes,
        "files": result.files,
        "digests": result.digests,
    }


def from_record(record: dict, path: Path | str = "record") -> SampleResult:
    """The parts of a SampleResult that metrics and reports need (no label maps)."""
    try:
        counts = {}
        for name, c in record["counts"].items():
            missing = [key for key in COUNT_KEYS if key not in c]
            if missing:
                raise RecordError(f"{path}: counts of {name!r} lack {', '.join(missing)}; delete it to recompute "
                                  "that sample")  # fmt: skip
            ints = {key: {int(k): int(v) for k, v in c[key].items()} for key in INT_KEYS}
            counts[name] = SourceCounts(**ints, ba={int(k): float(v) for k, v in c["ba"].items()})
        return SampleResult(
            id=str(record["id"]),
            labels={},
            counts=counts,
            seconds={str(k): float(v) for k, v in record.get("seconds", {}).items()},
            random_weights=list(record.get("random_weights", [])),
            notes=record.get("notes", {}),
            unscored_reason=record.get("unscored_reason"),
            files=record.get("files", {}),
            digests=record.get("digests", {}),
        )
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        if isinstance(e, RecordError):
            raise
        raise RecordError(f"{path}: malformed record ({type(e).__name__}: {e}); delete it to recompute that sample") from None


def read_record(path: Path) -> SampleResult:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: corrupt record ({e}); delete it to recompute that sample") from None
    if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
        raise RecordError(f"{path}: not a complete record (needs {', '.join(REQUIRED)}); delete it to recompute that sample")
    if safe_name(str(record["id"])) != path.stem:
        raise RecordError(f"{path}: holds sample {record['id']!r}, not {path.stem!r}; delete it to recompute that sample")
    return from_record(record, path)


def stored_ids(out_dir: Path, ids: Iterable[str]) -> list[str]:
    """Those of `ids` that have a record file (without reading it)."""
    folder = Path(out_dir) / RECORDS
    names = {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()
    return [i for i in ids if safe_name(i) in names]


def load_results(out_dir: Path, ids: list[str] | None = None) -> list[SampleResult]:
    """The stored results of `ids` (every record when None), each once, in id order.

    Records of other ids in the folder are not counted: numbers cover exactly the dataset
    being scored."""
    folder = Path(out_dir) / RECORDS
    if ids is None:
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    else:
        paths = [record_path(out_dir, i) for i in stored_ids(out_dir, ids)]
    return [read_record(p) for p in paths]
