"""User-facing errors: each carries a one-line message that the CLI prints without a traceback."""

from __future__ import annotations


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (its type's name when it has none), cut to ``limit``
    characters: what a one-line error may quote of another library's exception."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


class NdeconvError(Exception):
    """Base class of the errors caused by bad input (recipe, data, run directory, model, launch):
    every one the library raises for input it cannot use is one of these.

    ``argument`` names the function argument the message is about, when it starts with it
    (``grid optim.lr=x: ...``): the command line puts its own option in its place.
    """

    def __init__(self, *args: object, argument: str | None = None):
        super().__init__(*args)
        self.argument = argument


class RecipeError(NdeconvError, ValueError):
    """A recipe file or override is missing, malformed, or names an unknown key."""


class DataError(NdeconvError, ValueError):
    """A dataset source is missing or does not have the columns / splits the recipe names."""


class RunDirError(NdeconvError, ValueError):
    """A run directory is missing, incomplete, or does not match the command."""


class OutputError(NdeconvError, ValueError):
    """An output path (run directory, picture, export file) that cannot be written."""


class UnsupportedLayerError(NdeconvError, TypeError):
    """A convolution or norm layer that no conversion rule covers (see :func:`ndeconv.register_rule`)."""


class HubError(NdeconvError, OSError):
    """The Hugging Face hub cannot be reached, or has no such repository, or refused an upload."""


class DivergedError(NdeconvError, ArithmeticError):
    """Training diverged: a non-finite loss or weight. The run directory keeps its last finite
    checkpoint and a ``results.json`` with ``"status": "diverged"`` (``results``)."""

    def __init__(self, message: str, results: dict | None = None):
        super().__init__(message)
        self.results = results or {}


class LaunchError(NdeconvError, RuntimeError):
    """The processes of a run disagree with each other or with their launch: a process died or lost
    contact with the others, a resume on another process count, or a process that trains alone
    where the environment prepares several.

    ``rank`` is the process that died (None when unknown), ``world_size`` the run's process count,
    ``recorded`` the process count a resumed run was launched on, ``lost_peer`` whether this
    process lost contact with another one.
    """

    def __init__(self, message: str, *, rank: int | None = None, world_size: int | None = None,
                 recorded: int | None = None, lost_peer: bool = False, argument: str | None = None):
        super().__init__(message, argument=argument)
        self.rank, self.world_size, self.recorded, self.lost_peer = rank, world_size, recorded, lost_peer
