"""The mistakes a user makes most, answered before Lightning, diffusers and transformers are
imported (those imports alone take 5-10 s here, and a run on a cluster waits for them on
every process): the class preset and the output folder (a missing config file is answered
by `g4seg/cli.py`; missing models and data folders by `preflight`, which needs the classes). Only PyYAML and the standard library are used.

It reads the config files and the `--key value` / `--key=value` overrides the way the full
parser does for these few plain keys; anything it cannot read with certainty (a value that
is not plain YAML, a key given in another form) it leaves to the full parser, which checks
everything again. So it never refuses a run the full parser would accept."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..classes import resolve_classes
from ..errors import ConfigError
from .overrides import arg_pairs, config_node

KEYS = ("data.init_args.classes", "output_dir")


def settings(args: list[str]) -> dict[str, object]:
    """The values of KEYS as the command sets them (later sources win), where readable."""
    out: dict[str, object] = {}
    for key, value in arg_pairs(args):
        if key == "config":
            try:
                config = yaml.safe_load(Path(value).read_text()) or {}
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                return {}  # the full parser names what is wrong with it
            if isinstance(config, dict):
                for k in KEYS:
                    found = config_node(config, k)
                    if found is not None:
                        out[k] = found
        elif key in KEYS:
            try:
                out[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                out.pop(key, None)
    return out


def early_checks(args: list[str]) -> None:
    """Raises the one-line error of the first mistake found (nothing was run)."""
    found = settings(args)
    classes = found.get("data.init_args.classes")
    if isinstance(classes, (str, list)):
        resolve_classes(classes)
    out = found.get("output_dir")
    if isinstance(out, str) and out:
        path = Path(out).expanduser()
        parent = next((p for p in [path, *path.parents] if p.exists() or p.is_symlink()), None)
        if parent is not None and not parent.is_dir():
            raise ConfigError(f"{out}: output folder is not writable ({parent} is a file); choose another --output_dir")
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{out}: output folder is not writable ({parent} is not writable); choose another --output_dir")
