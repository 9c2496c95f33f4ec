"""The package layers import only downwards (docs/architecture.md), read from the source
with `ast`; and the wheel carries every tracked file the packages need."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT

GROUND = {"types", "interfaces", "errors", "seeding", "files", "classes", "images", "softening", "precision", "finite",
          "ade20k_names"}  # fmt: skip
# what each part of g4seg may import from the rest of g4seg (besides the ground floor)
CORE = {
    "ground": set(),
    "models": set(),
    "evaluation": set(),
    "report": {"evaluation"},
    "run": {"evaluation", "report", "models"},
    "api": {"run", "models", "evaluation"},
    "cli": {"run"},
    "facade": {"api"},  # g4seg/__init__.py: g4seg.refine, g4seg.load_strategy
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def part_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "g4seg").parts
    if len(rel) > 1:
        return rel[0]
    stem = path.stem
    return "facade" if stem == "__init__" else "ground" if stem in GROUND else stem


def python_files(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def test_core_never_imports_its_plugins_and_its_parts_import_downwards():
    problems = []
    for path in python_files("g4seg"):
        part = part_of(path)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in ("datamodules", "strategies"):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            elif top == "g4seg" and len(name.split(".")) > 1:
                target = name.split(".")[1]
                target = "ground" if target in GROUND else target
                if target not in ("ground", part) and target not in CORE[part]:
                    problems.append(f"{path.relative_to(ROOT)} ({part}) imports {name} ({target})")
    assert not problems, "\n".join(problems)


def test_datamodules_build_on_the_core_only_and_strategies_reach_datamodules_only_to_train():
    problems = [f"{p.relative_to(ROOT)} imports {n}" for p in python_files("datamodules") for n in imported_modules(p)
                if n.split(".")[0] == "strategies"]  # fmt: skip
    problems += [f"{p.relative_to(ROOT)} imports {n}" for p in python_files("strategies") for n in imported_modules(p)
                 if n.split(".")[0] == "datamodules" and not any("training" in part for part in p.relative_to(ROOT).with_suffix("").parts)]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_tests_run_scripts_as_programs_never_import_them():
    pattern = 'ROOT / "scripts' + '"'  # a sys.path entry into scripts/
    offenders = [p.name for p in (ROOT / "tests").glob("*.py") if pattern in p.read_text()]
    assert not offenders


def test_the_layer_rules_can_fail(tmp_path):
    """The parser sees relative imports: a report module reaching up into run is caught."""
    fake = ROOT / "g4seg" / "report" / "_layer_probe.py"
    fake.write_text("from ..run import module\n")
    try:
        assert "g4seg.run" in imported_modules(fake)
        with pytest.raises(AssertionError, match="_layer_probe"):
            test_core_never_imports_its_plugins_and_its_parts_import_downwards()
    finally:
        fake.unlink()


def test_the_wheel_holds_every_tracked_package_file(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "g4seg", "datamodules", "strategies"], cwd=ROOT, capture_output=True,
                             text=True)  # fmt: skip
    if tracked.returncode != 0 or not tracked.stdout.strip():
        pytest.skip("not a git checkout")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = tmp_path.glob("g4seg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in tracked.stdout.split() if f not in names]
    assert not missing, f"not in the wheel: {missing}"


def test_top_level_help_lists_the_commands_without_importing_lightning():
    code = ("import sys; from g4seg.cli import main; main(['--help']); "
            "print('heavy:', sorted(m for m in ('lightning', 'torch', 'diffusers') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "predict" in proc.stdout and "report" in proc.stdout and "heavy: []" in proc.stdout


def test_report_and_a_missing_config_answer_without_lightning_or_torch(tmp_path):
    """`g4seg report` reads records and writes the page with numpy, matplotlib and OpenCV
    only; a mistyped config path is answered before Lightning loads."""
    from helpers import finished_run

    out = finished_run(tmp_path / "run", "predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "2",
                       "--scoring.bootstrap", "100")  # fmt: skip
    code = ("import sys; from g4seg.cli import main; main(['report', sys.argv[1]]); "
            "print('heavy:', sorted(m for m in ('lightning', 'torch', 'diffusers') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and "heavy: []" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "g4seg.cli", "predict", "--config", "configs/nope.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr == "g4seg: error: configs/nope.yaml: config file does not exist\n"
