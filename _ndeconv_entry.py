"""The ``ndeconv`` console script: Ctrl-C at any moment, even while torch is still importing, ends
with one line and exit status 130 instead of a traceback.

It lives outside the package because importing anything in ``ndeconv`` first imports torch (the
package registers its models with timm on import); the package never imports it.
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


def main() -> None:
    """Import and run the command line, turning an interrupt into ``interrupted`` and exit 130.

    While the heavy imports run, Ctrl-C exits straight away; once they are done, interrupts become
    ``KeyboardInterrupt`` again so that a training run can stop cleanly at an epoch boundary. A
    process started with interrupts ignored (``ndeconv ... &`` in a shell script) keeps
    ignoring them, as ``python -m ndeconv`` and every Python program does.
    """
    missing = missing_train_extra()
    if missing:
        print(f"error: the command line needs the train extra ({', '.join(missing)} not installed): "
              "pip install 'ndeconv[train]'", file=sys.stderr)
        sys.exit(1)
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored:
        signal.signal(signal.SIGINT, _exit_interrupted)
    from ndeconv.cli import main as run

    if not ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run()
