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


FIELDS = {"seconds": (dict, "an object of numbers"), "random_weights": (list, "a list of names"),
          "notes": (dict, "an object of lists of text"), "files": (dict, "an object of paths"),
          "digests": (dict, "an object of hashes"), "counts": (dict, "an object of per-source counts")}  # fmt: skip


def _malformed(path, field: str, what: str) -> RecordError:
    return RecordError(f"{path}: field {field!r} {what}; delete it to recompute that sample")


def _checked_fields(record: dict, path) -> None:
    """Each field's type, so that a record edited by hand or cut short names what is wrong
    instead of failing wherever the value is first used."""
    for key, (kind, what) in FIELDS.items():
        if key in record and not isinstance(record[key], kind):
            raise _malformed(path, key, f"must be {what}, not {type(record[key]).__name__}")
    if record.get("unscored_reason") is not None and not isinstance(record["unscored_reason"], str):
        raise _malformed(path, "unscored_reason", "must be text or null")
    for name, notes in record.get("notes", {}).items():
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise _malformed(path, f"notes.{name}", "must be a list of text")
    for key in ("files", "digests"):
        if not all(isinstance(v, str) for v in record.get(key, {}).values()):
            raise _malformed(path, key, "must map names to text")
    for name, c in record["counts"].items():
        if not isinstance(c, dict):
            raise _malformed(path, f"counts.{name}", f"must be an object, not {type(c).__name__}")
        for key in COUNT_KEYS:
            if key in c and not isinstance(c[key], dict):
                raise _malformed(path, f"counts.{name}.{key}", "must map class ids to numbers")


def from_record(record: dict, path: Path | str = "record") -> SampleResult:
    """The parts of a SampleResult that metrics and reports need (no label maps)."""
    _checked_fields(record, path)
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
            random_weights=[str(n) for n in record.get("random_weights", [])],
            notes=record.get("notes", {}),
            unscored_reason=record.get("unscored_reason"),
            files=record.get("files", {}),
            digests=record.get("digests", {}),
        )
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        if isinstance(e, RecordError):
            raise
        raise RecordError(f"{path}: malformed record ({type(e).__name__}: {e}); delete it to recompute that sample") from None


def check_class_ids(result: SampleResult, num_classes: int, path) -> None:
    """Class ids of the counts within the run's classes (a record of another dataset, or edited)."""
    for name, sc in result.counts.items():
        for key in COUNT_KEYS:
            bad = sorted(c for c in getattr(sc, key) if not 0 <= c < num_classes)
            if bad:
                raise _malformed(path, f"counts.{name}.{key}", f"has class id {bad[0]}, outside the run's "
                                 f"{num_classes} classes")  # fmt: skip


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
