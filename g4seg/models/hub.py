"""One hub for every model the harness loads: one copy per checkpoint in a process, found
by one key rule, and one way of saying what to download when a model is missing.

Injectors, refiners and coarse producers that name the same checkpoint (a timestep sweep,
G4Seg alone and chained, a CLIP segmenter and the G4Seg refiner on the same CLIP) share
its modules instead of each holding several GB. Nothing trains them, so sharing is safe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import ModelNotFoundError

T = TypeVar("T")
_LOADED: dict[tuple, object] = {}


def looks_local(source: str) -> bool:
    """Paths are told from hub ids ("org/name") by their start, so a typo fails fast offline."""
    return source.startswith(("/", ".", "~")) or os.sep + os.sep in source or Path(source).exists()


def source_key(source: str | None) -> str | None:
    """The key rule: a local path by its resolved location, size and modification time (a
    rewritten checkpoint is a new one); tiny names and hub ids as written."""
    if source is None or not looks_local(str(source)):
        return source
    path = Path(source).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path}@{stat.st_size}:{stat.st_mtime_ns}"


def shared(kind: str, sources: tuple[str | None, ...], load: Callable[[], T], *settings) -> T:
    """The one loaded copy of `kind` from `sources` (+ settings that change the modules)."""
    key = (kind, *(source_key(s) for s in sources), *settings)
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]  # type: ignore[return-value]


def load_errors() -> tuple[type[BaseException], ...]:
    """What loading a model folder or file raises when the files are missing, truncated or
    corrupt (a weights file cut short raises SafetensorError or EOFError, a checkpoint of
    another shape RuntimeError): each names the file and what to download, never a traceback."""
    import pickle
    import zipfile

    errors: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
                                               RuntimeError)  # fmt: skip
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:
        pass
    return errors


def first_line(error: BaseException, limit: int | None = 400) -> str:
    """An error's first line ("" where it has no message, as EOFError())."""
    return (str(error).strip().splitlines() or [""])[0][:limit]


def why(error: BaseException) -> str:
    """The first line of an error, or its type where it has no message (EOFError())."""
    first = first_line(error)
    corrupt = type(error).__name__ in ("SafetensorError", "EOFError", "UnpicklingError", "BadZipFile") or \
        any(s in first for s in ("PytorchStreamReader", "Unable to load weights"))  # fmt: skip
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return text + ("; a truncated or corrupt download?" if corrupt else "")


def hub_command(repo: str) -> str:
    return f"hf download {repo} --local-dir {Path(repo).name}"


def missing(where: str, problem: str, what: str, get: str, key: str) -> ModelNotFoundError:
    """The one download hint: where, what is wrong, the command to run elsewhere, the key to set."""
    return ModelNotFoundError(
        f"{where}: {problem}.\n"
        f"Download {what} on a machine with internet access:\n  {get}\n"
        f"copy it here and set `{key}:` to its path."
    )


def require_local(source: str | None, kind: str, what: str, get: str, key: str) -> None:
    """A path that does not exist fails here, before any loading library is asked."""
    require_all([(source, kind, what, get, key)])


def require_all(wanted: list[tuple[str | None, str, str, str, str]]) -> None:
    """Every missing path of (source, "file" | "folder", what, get, key) in one error."""
    errors = []
    for source, kind, what, get, key in wanted:
        if source and looks_local(source):
            path = Path(source).expanduser()
            if not (path.is_dir() if kind == "folder" else path.is_file()):
                errors.append(str(missing(source, f"{what} {kind} does not exist", what, get, key)))
    if errors:
        raise ModelNotFoundError("\n".join(errors))


def mismatch_line(error: Exception) -> str:
    """The informative line of `load_state_dict`'s error (its first line only names the class)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict") else lines[0])[:200]
