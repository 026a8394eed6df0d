"""The layout's rules, read from the source: imports point one way (import-linter's contracts in
pyproject.toml), every package is installed, the command line's words stay in the command line, the
run directory's file names in ``ndeconv/rundir``, no module grows past 400 lines."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import typer

import ndeconv.rundir as rundir
from ndeconv.cli import app

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ndeconv"


def _sources(*excluded: str) -> dict[str, str]:
    """Every module of the package but ``excluded`` (paths relative to the package), by path."""
    files = {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}
    return {name: text for name, text in files.items() if not name.startswith(excluded)}


def _long_options() -> set[str]:
    command = typer.main.get_command(app)
    options = set()
    for sub in command.commands.values():
        for param in sub.params:
            options.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return options - {"--help"}


def test_no_library_module_names_an_option_of_the_command_line():
    options = _long_options()
    assert {"--resume", "--num-processes", "--grid", "--set", "--format", "--data"} <= options  # the scan sees them
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(options, key=len, reverse=True)))
                         + r")(?![\w-])")
    found = [f"{name}: {m.group(1)}" for name, text in _sources("cli/").items() for m in pattern.finditer(text)]
    assert not found


def test_no_run_directory_file_name_outside_its_module():
    names = [*rundir.WRITING_ORDER, rundir.LOCK, rundir.LOG_DIR]
    assert "config.yaml" in names and "results.json" in names
    pattern = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in names))
    found = [f"{name}: {m.group(0)}" for name, text in _sources("rundir/").items() for m in pattern.finditer(text)]
    assert not found


def test_no_module_outside_the_task_registry_tests_a_task():
    from ndeconv.tasks import list_tasks

    names = "|".join(map(re.escape, list_tasks()))
    assert "classification" in names and "segmentation" in names
    # a comparison with a recipe's task, or a table keyed by task names
    tests = re.compile(rf"\btask\s*(==|!=|\bin\b)|[{{,]\s*[\"']({names})[\"']\s*:")
    found = [f"{name}: {m.group(0)}" for name, text in _sources("tasks/").items() for m in tests.finditer(text)]
    assert not found


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` (found first on the path) with its pyproject.toml."""
    return subprocess.run([shutil.which("lint-imports") or "lint-imports", "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_imports_point_one_way():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("module, planted", [
    ("ndeconv/recipe/schema.py", "from ..tasks import get_task  # noqa: F401\n"),
    ("ndeconv/layers/delinear.py", "import fastai  # noqa: F401\n"),
    ("ndeconv/functional.py", "from . import layers  # noqa: F401\n"),
])
def test_the_contracts_catch_an_import_against_the_grain(tmp_path, module, planted):
    """A copy of the package with one import planted against the layering fails the check."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "ndeconv", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / module
    target.write_text(planted + target.read_text())
    result = _lint_imports(copy)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-2000:]


def test_every_package_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert listed == found | {"ndeconv.recipes"}


def test_no_module_over_400_lines():
    long = {name: n for name, text in _sources().items() if (n := text.count("\n")) > 400}
    assert not long


def _long_functions(text: str, limit: int) -> list[str]:
    """Functions whose body (docstring aside) runs over ``limit`` lines; a signature is not body."""
    import ast

    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(
                node.body[0].value, ast.Constant) and len(node.body) > 1 else node.body
            if node.end_lineno - body[0].lineno + 1 > limit:
                long.append(node.name)
    return long


def test_no_function_body_over_60_lines():
    assert _long_functions("def f():\n    'doc'\n" + "    x = 1\n" * 61, 60) == ["f"]  # the check can fail
    long = {name: found for name, text in _sources().items() if (found := _long_functions(text, 60))}
    assert not long


def test_the_trainers_names_load_from_their_modules_and_are_listed():
    """``ndeconv.train`` imports its names on first use: each one resolves to the module its table
    names, and ``dir`` lists them as an eager import would."""
    import ndeconv.train as train_package

    for name in train_package.__all__:
        assert getattr(train_package, name).__module__ == f"ndeconv.train.{train_package._HOMES[name]}", name
    assert set(train_package.__all__) <= set(dir(train_package))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        train_package.nope
