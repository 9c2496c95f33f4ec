"""Command-line class swaps that would silently inherit the old class's arguments.

`--data.init_args.coarse datamodules.CoarseFromFiles` on a config whose coarse block is
`SyntheticDegradation` makes jsonargparse keep every init_arg the new class also accepts
(`soften_sigma: 3.0` blurs the user's PNGs by 3 px), with or without a JSON dict value.
So such a swap is refused, in one line naming the inherited keys, unless the command line
sets each of them itself. Keys that are one parameter of a shared base class (SCLIP ->
MaskCLIP: the CLIP segmenters' `clip`, `names`, ...) mean the same on both sides and may
carry over.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

from ..errors import ConfigError

CLASS_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*\.[A-Z]\w*$")


def arg_pairs(args: list[str]) -> list[tuple[str, str]]:
    """(key, value) of each `--key value` / `--key=value`, in order; a `--flag` followed by
    another option pairs with nothing (as the parser reads it)."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            pairs.append((key, value))
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            pairs.append((arg[2:], args[i + 1]))
            i += 1
        i += 1
    return pairs


def config_node(config: dict, key: str):
    """The value at a dotted key of a config, or None."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _class(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None  # jsonargparse will say what is wrong with the name


def _declared_by(cls, key: str):
    """The class whose own constructor declares `key` (following **kwargs up the MRO)."""
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if key in params and params[key].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            return c
    return None


def _foreign(old_path: str, new_path: str, values: dict) -> list[str]:
    """Keys the new class would take from the old one although they are not the same
    parameter (declared by another constructor) and differ from the new class's default. A
    shared base's parameter (SCLIP -> MaskCLIP: the CLIP segmenters' `names`) means the same
    on both sides and may carry over."""
    old, new = _class(old_path), _class(new_path)
    if old is None or new is None:
        return []
    out = []
    for key, value in values.items():
        owner = _declared_by(new, key)
        if owner is None or owner is _declared_by(old, key):
            continue
        default = inspect.signature(owner.__dict__["__init__"]).parameters[key].default
        same = default is not inspect.Parameter.empty and json.dumps(default, default=str) == json.dumps(value, default=str)
        if not same:
            out.append(key)
    return out


def check_class_swaps(args: list[str]) -> None:
    """Raises ConfigError for a class swapped on the command line that would inherit arguments."""
    import yaml

    pairs = arg_pairs(args)
    configs = [value for key, value in pairs if key == "config"]
    given = {key for key, _ in pairs}

    for file in configs:
        path = Path(file)
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue  # jsonargparse reports it
        for key, value in pairs:
            target, new = (key[: -len(".class_path")], value) if key.endswith(".class_path") else (key, value)
            if new.lstrip().startswith("{"):  # a whole block: its own init_args count as given
                try:
                    block = yaml.safe_load(new)
                except yaml.YAMLError:
                    continue
                new = str(block.get("class_path", "")) if isinstance(block, dict) else ""
                given |= {f"{target}.init_args.{k}" for k in (block.get("init_args") or {})} if isinstance(block, dict) else set()
            if not CLASS_PATH.match(new):
                continue
            old = config_node(config, target)
            if not isinstance(old, dict) or "class_path" not in old or old["class_path"] == new:
                continue
            init_args = old.get("init_args") or {}
            unset = {k: v for k, v in init_args.items() if not {f"{target}.init_args.{k}", f"{target}.{k}"} & given}
            foreign = _foreign(old["class_path"], new, unset)
            inherited = {k: init_args[k] for k in foreign}
            if inherited:
                shown = ", ".join(f"{k}: {v}" for k, v in inherited.items())
                sets = " ".join(f"--{target}.init_args.{k} VALUE" for k in inherited)
                raise ConfigError(
                    f"--{target} {new} replaces {old['class_path']} of {file}, whose {shown} would carry over to the new "
                    f"class; set them on the command line ({sets}) or write the new block in a config file"
                )
