"""Writing files so that a killed run never leaves half of one, with the modes a plain
open() would give; and the one mapping from sample ids to file names."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import NoSpaceError

FULL = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def no_space(path: Path, needed: int, error: OSError) -> NoSpaceError:
    """The one message for a full disk: which file, how much it needed, how much is free."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    what = "no space left" if error.errno == errno.ENOSPC else "disk quota exceeded"
    return NoSpaceError(f"{path}: {what} on the device of {folder} ({size(free)} free, "
                        f"{size(max(needed, 1))} needed for this file); free some space, then rerun the same "
                        "command: what was written is whole and is kept")  # fmt: skip


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then rename. The file gets 0666 less the umask, not
    mkstemp's 0600. A full disk leaves no temp file and says so in one line."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in FULL:
            raise no_space(path, len(data), e) from None
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


def read_hashed(path: Path, digests: dict[str, str] | None = None) -> bytes:
    """The file's bytes, read once; with `digests`, their SHA-256 is noted under the path, so
    a resumed run can tell whether the very bytes a sample was computed from changed."""
    data = Path(path).read_bytes()
    if digests is not None:
        digests[str(path)] = hashlib.sha256(data).hexdigest()
    return data


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file now, or None when it is gone."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
