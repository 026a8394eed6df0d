"""The ``ndeconv`` console script: ``--help`` and a bad flag answer at once, without importing torch;
Ctrl-C at any moment, even while torch is still importing, ends with one line and exit status 130
instead of a traceback. Run as ``python -m _ndeconv_entry``, the launcher of a run's processes
(:mod:`ndeconv.cli.launch`), which needs neither timm nor the models.

It lives outside the package because importing anything in ``ndeconv`` first runs the package's
``__init__``, which imports torch and timm (it registers its models with timm); here that is deferred
until a command runs (:func:`ndeconv.cli.common.friendly_errors` completes the package). The
package never imports this module.
"""

import importlib.util
import os
import signal
import sys

#: What the command line imports beyond the core install: the ``train`` extra.
TRAIN_EXTRA = ("fastai", "accelerate", "datasets", "typer", "rich", "sklearn", "matplotlib")


def missing_train_extra() -> list[str]:
    """The modules of the ``train`` extra that are not installed (found without importing them)."""
    return [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]


def _exit_interrupted(signum: int = signal.SIGINT, frame: object = None) -> None:
    """Leave at once: an interrupt raised inside a half-done import can be swallowed or corrupt it."""
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def _defer_package() -> None:
    """Register the package from its spec, unexecuted, so that the command line's modules (Typer and
    the recipe schema, no torch) load alone."""
    if "ndeconv" not in sys.modules:
        spec = importlib.util.find_spec("ndeconv")
        sys.modules["ndeconv"] = importlib.util.module_from_spec(spec)


def _command_line():
    """``ndeconv.cli.main``, imported with the package's own ``__init__`` deferred."""
    _defer_package()
    from ndeconv.cli import main as run

    return run


def main() -> None:
    """Import and run the command line, turning an interrupt into ``interrupted`` and exit 130.

    Until a command has imported the package (torch and all), Ctrl-C exits straight away; then
    interrupts become ``KeyboardInterrupt`` again (:func:`ndeconv.cli.common.complete_package`) so
    that a training run can stop cleanly at an epoch boundary. A process started with interrupts
    ignored (``ndeconv ... &`` in a shell script) keeps ignoring them, as ``python -m ndeconv`` and
    every Python program does.
    """
    missing = missing_train_extra()
    if missing:
        print(f"error: the command line needs the train extra ({', '.join(missing)} not installed): "
              "pip install 'ndeconv[train]'", file=sys.stderr)
        sys.exit(1)
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored:
        signal.signal(signal.SIGINT, _exit_interrupted)
    _command_line()()


def launcher() -> None:
    """``python -m _ndeconv_entry ARGS``: ``accelerate launch ARGS`` as :mod:`ndeconv.cli.launch` wraps
    it, without the package's ``__init__`` (timm and the models), which would delay the processes
    (by 1.5 s on 2 cores)."""
    _defer_package()
    from ndeconv.cli.launch import main as launch

    sys.exit(launch(sys.argv[1:]))


if __name__ == "__main__":
    launcher()
