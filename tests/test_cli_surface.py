"""The command line as a newcomer meets it: help without importing torch, every bad flag one
``error:`` line, help texts generated from the schema, tables readable at 80 columns."""

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ndeconv.export import FORMATS
from ndeconv.recipe import bundled_recipes
from ndeconv.recipe.schema import Norm, Precision

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "compare", "evaluate", "predict", "export", "models", "recipes", "push", "viz"]
HEAVY = ("torch", "timm", "fastai", "accelerate", "datasets", "numpy", "PIL", "pandas", "matplotlib", "sklearn")

#: Runs the console script's entry point on each argument list in one process, then prints the heavy
#: modules that were imported.
HELP_PROBE = """
import contextlib, io, sys
import _ndeconv_entry
for args in {argv!r}:
    sys.argv = ["ndeconv", *args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            _ndeconv_entry.main()
        except SystemExit as e:
            assert e.code in (0, None), (args, e.code)
    assert "Usage: ndeconv" in out.getvalue(), args
    sys.__stdout__.write(out.getvalue())
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print("HEAVY", heavy)
"""


def _cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` (the console script's entry point) with the output not a terminal."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def helps() -> str:
    """``--help`` of the application and of every command, printed in one process (no heavy import checked)."""
    argv = [["--help"]] + [[command, "--help"] for command in COMMANDS]
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    probe = HELP_PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_imports_no_heavy_module(helps):
    assert helps.strip().splitlines()[-1] == "HEAVY []"


def test_help_is_plain_text_wrapped_to_the_terminal(helps):
    for line in helps.splitlines():
        assert len(line) <= 80, line
        assert "``" not in line and "[/" not in line and "╭" not in line, line


def test_help_lists_the_schemas_choices(helps):
    """The choices of ``--norm``, ``--precision``, ``compare --norms`` and ``export --format`` are the
    schema's and the exporter's (generated: a new norm cannot be missing from the help)."""
    flat = " ".join(helps.split())
    assert f"--norm <str> {' | '.join(typing.get_args(Norm))} (model.norm)." in flat
    assert f"--precision <str> {' | '.join(typing.get_args(Precision))} (train.precision)." in flat
    assert f"norms to train: {', '.join(typing.get_args(Norm))} " in flat
    assert all(fmt in flat.split("--format <str>")[1][:80] for fmt in FORMATS)


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "abc"], "error: Invalid value for '--lr'"),
    (["train", "--epochs"], "error: Option '--epochs' requires an argument."),
    (["train", "--bogus"], "error: No such option: --bogus"),
    (["evaluate"], "error: Missing argument 'run'."),
    (["nosuch"], "error: No such command 'nosuch'."),
    (["train", "--num-processes", "0"], "error: Invalid value for '--num-processes'"),
])
def test_a_flag_typer_cannot_parse_is_one_error_line(args, message):
    done = _cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_recipes_table_is_readable_at_80_columns():
    done = _cli("recipes")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    first_cells = [line.split()[0] for line in lines if line.strip()]
    assert all(name in first_cells for name in bundled_recipes())  # whole names, one row each
