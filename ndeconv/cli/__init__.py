"""The ``ndeconv`` command line (Typer), one module per command: ``train``, ``compare``, ``viz``,
``evaluate`` and ``predict``, ``export``, ``push``, ``models`` and ``recipes``, and the
multi-process launcher (``launch``).

Bad input (recipe, data, run directory, unsupported layer) ends with one ``error: ...`` line on
stderr and exit status 2, never a traceback (:mod:`ndeconv.cli.common`). The commands import what
they run when they run it, so ``--help`` is quick.
"""

from __future__ import annotations

import sys

import typer

from . import compare, evaluate, export, listing, push, train, viz
from .app import app
from .common import INTERRUPTED, err_console, error_line

__all__ = ["app", "main", "compare", "evaluate", "export", "listing", "push", "train", "viz"]


def main() -> None:
    """Run the command line (``python -m ndeconv``): a flag Typer cannot parse is one ``error:`` line
    and exit status 2, as every bad input; Ctrl-C ends with ``interrupted`` and exit status 130.
    (The ``ndeconv`` script also catches it while the package is still importing: ``_ndeconv_entry``.)"""
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as e:  # Typer's parse errors: a bad value, an unknown option or command
        err_console.print(f"error: {error_line(e)}", highlight=False, markup=False, soft_wrap=True)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted", highlight=False)
        raise SystemExit(INTERRUPTED) from None
    finally:
        _leave_process_group()
    raise SystemExit(status if isinstance(status, int) else 0)


def _leave_process_group() -> None:
    """A launched process leaves its process group before the interpreter exits, however the command
    ended: gloo's threads are then joined, not torn down during the exit (where they can abort the
    process, SIGABRT, after its run was interrupted and checkpointed)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
