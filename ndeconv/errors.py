"""User-facing errors: each carries a one-line message that the CLI prints without a traceback."""

from __future__ import annotations


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (its type's name when it has none), cut to ``limit``
    characters: what a one-line error may quote of another library's exception."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


class NdeconvError(Exception):
    """Base class of the errors caused by bad input (recipe, data, run directory)."""


class RecipeError(NdeconvError, ValueError):
    """A recipe file or override is missing, malformed, or names an unknown key."""


class DataError(NdeconvError, ValueError):
    """A dataset source is missing or does not have the columns / splits the recipe names."""


class RunDirError(NdeconvError, ValueError):
    """A run directory is missing, incomplete, or does not match the command."""


class OutputError(NdeconvError, ValueError):
    """An output path (run directory, picture, export file) that cannot be written."""


class HubError(NdeconvError, OSError):
    """The Hugging Face hub cannot be reached, or has no such repository, or refused an upload."""


class DivergedError(NdeconvError, ArithmeticError):
    """Training diverged: a non-finite loss or weight. The run directory keeps its last finite
    checkpoint and a ``results.json`` with ``"status": "diverged"`` (``results``)."""

    def __init__(self, message: str, results: dict | None = None):
        super().__init__(message)
        self.results = results or {}
