"""The ``ndeconv`` command line (Typer), one module per command: ``train``, ``compare``, ``viz``,
``evaluate`` and ``predict``, ``export``, ``push``, ``models`` and ``recipes``, and the
multi-process launcher (``launch``).

Bad input (recipe, data, run directory, unsupported layer) ends with one ``error: ...`` line on
stderr and exit status 2, never a traceback (:mod:`ndeconv.cli.common`). The commands import what
they run when they run it, so ``--help`` is quick.
"""

from __future__ import annotations

from . import compare, evaluate, export, listing, push, train, viz
from .app import app
from .common import INTERRUPTED, err_console

__all__ = ["app", "main", "compare", "evaluate", "export", "listing", "push", "train", "viz"]


def main() -> None:
    """Run the command line (``python -m ndeconv``); Ctrl-C ends with ``interrupted`` and exit status 130.
    (The ``ndeconv`` script also catches it while the package is still importing: ``_ndeconv_entry``.)"""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        raise SystemExit(INTERRUPTED) from None
