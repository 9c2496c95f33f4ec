"""Before any model is built: every local file and folder a config names that is missing,
listed at once with what to download or prepare. Without it a fresh machine learns about
one missing model per run, after seconds of loading each time.

A part says which of its arguments are such paths, and how to get them, in a class
attribute `FILES_NEEDED` ({argument: how to get it}; "{name}" fields are filled from the
part's own arguments). Hub ids and `tiny` models are the loaders' business.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelNotFoundError
from ..models.hub import looks_local


def parts(node, key: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, node) of every {class_path, init_args} node of a config."""
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str):
            yield key, node
        for k, v in node.items():
            yield from parts(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from parts(v, f"{key}[{i}]")


def part_class(path: str):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None  # the config's own parsing names it


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def missing_files(config: dict) -> list[str]:
    """One entry per missing path: the path, the config keys that name it, how to get it."""
    found: dict[str, tuple[list[str], str]] = {}
    for key, node in parts(config):
        cls = part_class(node["class_path"])
        args = node.get("init_args") or {}
        for arg, how in (getattr(cls, "FILES_NEEDED", None) or {}).items():
            value = args.get(arg)
            if isinstance(value, str) and value != "tiny" and looks_local(value) and not Path(value).expanduser().exists():
                found.setdefault(value, ([], how.format_map(_Blank(args))))[0].append(f"{key}.init_args.{arg}")
    lines = []
    for path, (keys, how) in found.items():
        named = keys[0] + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        lines.append(f"  {path}  ({named})\n      get it: {how}")
    return lines


def preflight(config: dict) -> None:
    lines = missing_files(config)
    if lines:
        raise ModelNotFoundError(f"{len(lines)} files or folders this config names do not exist (nothing was run); "
                                 "get them on a machine with internet access and copy them there:\n" + "\n".join(lines))  # fmt: skip
