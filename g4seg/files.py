"""Writing files so that a killed run never leaves half of one, with the modes a plain
open() would give; and the one mapping from sample ids to file names."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then rename. The file gets 0666 less the umask, not
    mkstemp's 0600."""
    path = Path(path)
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
    """File name of a sample's masks, record and thumbnails: reversible, so two ids never
    share a file ("sub/x" -> "sub%2Fx", "sub__x" stays "sub__x"; "%" itself -> "%25")."""
    return sample_id.replace("%", "%25").replace("/", "%2F")


def open_no_follow(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses a symbolic link at `path` (a planted link would make the run
    write through it to a file outside its folder)."""
    return os.open(path, flags | os.O_NOFOLLOW, mode)
