"""What every command shares: the consoles, the exit statuses, one-line errors, and the one table of
options that set recipe keys."""

from __future__ import annotations

import functools
import signal
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..recipe import Recipe
    from ..tasks import Task

console = Console()
err_console = Console(stderr=True)

#: Exit statuses: bad input (one ``error:`` line), a process that lost contact with another (it
#: prints nothing; the launcher names the one that died), Ctrl-C (``interrupted``).
INPUT_ERROR, LOST_PEER, INTERRUPTED = 2, 3, 130

DEFAULT_RECIPE = "digits"
MAX_ERROR = 2000  # characters of an error line
#: The library arguments an error may start with (``NdeconvError.argument``) and the option the user typed.
ARGUMENT_FLAGS = {"grid": "--grid", "norms": "--norms", "time_budgets": "--budget", "fmt": "--format",
                  "num_processes": "--num-processes", "sync_stats": "--sync-stats", "no_sync_stats": "--no-sync-stats"}
#: The options that set a recipe key, and the key each sets (the one table of them).
FLAG_KEYS = {"--model": "model.name", "--norm": "model.norm", "--budget": "train.budget", "--epochs": "train.epochs",
             "--lr": "optim.lr", "--batch-size": "train.batch_size", "--precision": "train.precision",
             "--data": "data.path", "--limit-train": "train.limit_train", "--seed": "train.seed",
             "--log-with": "train.log_with"}


def choices(literal: Any, sep: str = " | ") -> str:
    """A schema type's choices for an option's help (``bn | gn | deconv | none``), so it never goes stale."""
    return sep.join(map(str, typing.get_args(literal)))


def error_line(error: Exception) -> str:
    """An ndeconv error as the one line the user sees: its message on one line, the library's
    argument name replaced by the option the user typed, cut to a sane length."""
    text = error.format_message() if hasattr(error, "format_message") else str(error)
    line = " ".join(text.split())
    argument = getattr(error, "argument", None) or ""
    flag = ARGUMENT_FLAGS.get(argument)
    if flag and line.startswith(argument):
        line = flag + line[len(argument):]
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 3] + "..."


def complete_package() -> None:
    """Run the package's ``__init__`` (torch, timm, the models' registration) where the console script
    deferred it so that ``--help`` answers at once (``_ndeconv_entry``), then let Ctrl-C raise
    ``KeyboardInterrupt`` again (until here it exits at once: an interrupt inside an import can be
    swallowed); a process that ignores interrupts keeps ignoring them."""
    package = sys.modules[__package__.partition(".")[0]]
    if "deconvolve" not in vars(package):
        package.__spec__.loader.exec_module(package)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def friendly_errors(fn: Callable) -> Callable:
    """Run a command on the complete package, its input errors as one ``error:`` line and exit
    status 2, and Ctrl-C as ``interrupted`` and exit status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        complete_package()
        from ..errors import NdeconvError

        try:
            return fn(*args, **kwargs)
        except NdeconvError as e:
            from rich.markup import escape

            err_console.print(f"[red]error:[/red] {escape(error_line(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(INPUT_ERROR) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(INTERRUPTED) from None

    return wrapper


def quiet_datasets(quiet: bool) -> None:
    """``--quiet`` also silences the progress bars of ``datasets``."""
    if quiet:
        import datasets

        datasets.disable_progress_bars()


def _flag_value(flag: str, value: Any) -> Any:
    """An option's value as its recipe key takes it: ``--data`` an absolute path, ``--log-with`` a list."""
    if flag == "--data":
        return str(Path(value).expanduser().resolve())
    if flag == "--log-with":
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


def overrides(flags: dict[str, Any], sets: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The recipe overrides of the given options (``{"--lr": 0.1, "--model": None, ...}``; None: not
    given) and ``--set`` items, and the option each came from (for errors)."""
    from ..errors import RecipeError

    keys = {FLAG_KEYS[flag]: _flag_value(flag, value) for flag, value in flags.items() if value is not None}
    sources = {FLAG_KEYS[flag]: flag for flag, value in flags.items() if value is not None}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item}: expected key.sub=value")
        keys[key.strip()] = value
        sources[key.strip()] = f"--set {key.strip()}"
    return keys, sources


def load_checked_recipe(recipe: str, flags: dict[str, Any], sets: list[str]) -> tuple[Recipe, Task]:
    """The recipe a command runs, with its options and ``--set`` items applied, and its task (checked
    against its data), before anything is trained or written."""
    from ..recipe import load_recipe
    from ..tasks import resolve_task

    r = load_recipe(recipe, *overrides(flags, sets))
    return r, resolve_task(r)


def csv_list(text: str, option: str, cast: type = str) -> list:
    """A comma-separated option's items, cast; an empty or unparsable list is a one-line error."""
    from ..errors import RecipeError

    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [cast(t) for t in items]
    except ValueError:
        raise RecipeError(f"{option} {text}: expected a comma-separated list of {cast.__name__}s") from None
    if not values:
        raise RecipeError(f"{option}: empty list")
    return values
