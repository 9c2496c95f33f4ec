"""The docs cannot drift from the code: every config key the keys table documents is one the
CLI resolves, every config file and script the pages name exists, and every page the README
links to is there."""

from __future__ import annotations

import re

import yaml

from helpers import ROOT, cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def flat(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from flat(value, f"{prefix}{key}.")


def documented_keys() -> list[str]:
    text = (ROOT / "docs" / "usage.md").read_text()
    table = text.split("## Config keys", 1)[1].split("\n## ", 1)[0]
    keys = []
    for row in re.findall(r"^\| (`[^|]+`) \|", table, flags=re.M):
        names = re.findall(r"`([^`]+)`", row)
        parent = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys += [names[0]] + [n if "." in n else parent + n for n in names[1:]]
    return keys


def test_every_documented_config_key_is_one_the_cli_resolves():
    code, out, err = cli("predict", "--config", "configs/demo.yaml", "--print_config")
    assert code == 0, err[-2000:]
    resolved = set(flat(yaml.safe_load(out)))
    keys = documented_keys()
    assert len(keys) >= 15, keys
    missing = [k for k in keys if not k.endswith(".*") and k not in resolved]
    assert not missing, f"documented in docs/usage.md but not a key of the CLI: {missing}"


def test_every_config_file_script_and_page_the_docs_name_exists():
    named = set()
    for page in PAGES:
        text = page.read_text()
        named |= set(re.findall(r"(?<![\w/.])(configs/[\w./-]+\.ya?ml|scripts/[\w./-]+\.(?:py|sh))", text))  # (a
        # `configs/...py` is a reference repository's file, e.g. SegRefiner's, not one of ours)
        named |= {f"docs/{m}" for m in re.findall(r"\]\((?!http)([\w-]+\.md)\)", text)} if page.parent.name == "docs" else set()
        named |= set(re.findall(r"\]\((docs/[\w./-]+)\)", text))
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert len(named) > 20 and not missing, missing
