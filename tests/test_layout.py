"""The layout's rules, read from the source: the command line's words stay in the command line, the
run directory's file names in ``ndeconv/rundir``."""

import re
from pathlib import Path

import typer

import ndeconv.rundir as rundir
from ndeconv.cli import app

PACKAGE = Path(__file__).resolve().parents[1] / "ndeconv"


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
    found = [f"{name}: {m.group(1)}" for name, text in _sources("cli.py").items() for m in pattern.finditer(text)]
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
    found = [f"{name}: {m.group(0)}" for name, text in _sources("tasks.py").items() for m in tests.finditer(text)]
    assert not found
