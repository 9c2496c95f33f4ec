"""A mistyped option or config key as one line with the nearest valid name, instead of the
70-line usage text and union-type dump jsonargparse prints. Without Lightning: it reads
the message and the parser's option names only."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re

UNRECOGNIZED = re.compile(r"unrecognized arguments: (\S+)")
NOT_ACCEPTED = re.compile(r"Parser key \"([^\"]+)\":.*?class_path '([\w.]+)'.*?(?:Option|Key) '([^']+)' is not accepted", re.S)
KEY = re.compile(r"Parser key \"([^\"]+)\":[ \t]*\n?\s*([^\n]*)")
SKIP = ("Does not validate", "Subtypes", "Errors", "Given", "- Problem with given class_path")


def suggestion(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def class_options(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):  # **kwargs constructors pass on to their bases
        init = klass.__dict__.get("__init__")
        if init is not None:
            names += [p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs")]
    return names


def one_line(message: str, option_names: list[str]) -> str:
    """The parser's complaint as one line naming the bad key, with a suggestion."""
    found = UNRECOGNIZED.search(message)
    if found:
        word = found.group(1)
        key = word.split("=", 1)[0]
        hint = suggestion(key, option_names)
        return f"unknown option {key}{hint}" if key.startswith("-") else f"unexpected argument {word!r}"
    found = NOT_ACCEPTED.search(message)
    if found:
        key, class_path, option = found.groups()
        short = class_path.rpartition(".")[2]
        hint = suggestion(option, class_options(class_path))
        return f"{key}: {short} takes no option {option!r}{hint}"
    keys = KEY.findall(message)
    if keys:
        names = [k for k, _ in keys]
        key = names[0] + "".join(f".init_args.{k}" for k in names[1:]) if "class_path" in message else ".".join(names)
        detail = keys[-1][1].strip()
        if not detail or detail.startswith(SKIP):
            lines = [line.strip(" -") for line in message.splitlines()[1:] if line.strip(" -")]
            detail = next((line for line in lines if not line.startswith(SKIP) and "Parser key" not in line), "invalid value")
        return f"{key}: " + re.sub(r"<class '(\w+)'>", r"\1", detail).replace("Expected a ", "expected ")
    return " ".join(message.split())[:300]
