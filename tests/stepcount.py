"""Counting the optimizer steps a run takes, from outside the code under test.

:func:`install` wraps ``ndeconv.train.run.build_learner`` so that the run's Learner (not a budget's
calibration learner) gets a :class:`StepCount`: after each epoch's training it writes that epoch's
count of training batches to ``<dir>/rank<r>-epoch<e>``. An epoch redone after an interruption
overwrites its file, so the files of a finished run add up to the steps of the trajectory that
produced it. ``interrupt_after`` raises ``KeyboardInterrupt`` after that epoch (once its checkpoint
is written), as Ctrl-C would. In launched processes the same is installed by ``sitecustomize.py``
(:func:`sitecustomize_dir`), driven by environment variables; they also record whether they left
their process group before the interpreter exited (:func:`record_exit`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastai.callback.core import Callback

COUNT_ENV, INTERRUPT_ENV = "NDECONV_TEST_STEP_DIR", "NDECONV_TEST_INTERRUPT_AFTER"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class StepCount(Callback):
    order = 99

    def __init__(self, out: Path, interrupt_after: int | None):
        self.out, self.interrupt_after = out, interrupt_after

    def before_train(self) -> None:
        self.n = 0

    def after_batch(self) -> None:
        if self.training:
            self.n += 1

    def after_train(self) -> None:
        (self.out / f"rank{_rank()}-epoch{self.epoch}").write_text(str(self.n))

    def after_epoch(self) -> None:
        if self.interrupt_after is not None and self.epoch + 1 == self.interrupt_after:
            raise KeyboardInterrupt


def install(out: Path, interrupt_after: int | None = None) -> None:
    """Count (and optionally interrupt) the steps of every run this process trains from now on."""
    import ndeconv.train.run as run

    real = getattr(run.build_learner, "wrapped", run.build_learner)

    def build_learner(recipe, dls, model, accelerator, task, length=None, cbs=None):
        extra = [StepCount(out, interrupt_after)] if length is not None else []
        return real(recipe, dls, model, accelerator, task, length, cbs=[*(cbs or []), *extra])

    build_learner.wrapped = real
    run.build_learner = build_learner


def counted(out: Path) -> dict[int, int]:
    """Steps per rank: the sum of the rank's epoch files."""
    totals: dict[int, int] = {}
    for f in out.glob("rank*-epoch*"):
        rank = int(f.name[4:f.name.index("-")])
        totals[rank] = totals.get(rank, 0) + int(f.read_text())
    return totals


def record_exit(out: Path) -> None:
    """In a launched process (``RANK`` set), write ``<out>/exit-<pid>`` at interpreter exit: whether
    the process still belonged to its process group then (``joined``) or had left it (``left``)."""
    import atexit

    if "RANK" not in os.environ:
        return

    def record() -> None:
        import sys

        dist = sys.modules.get("torch.distributed")
        joined = dist is not None and dist.is_available() and dist.is_initialized()
        (out / f"exit-{os.getpid()}").write_text("joined" if joined else "left")

    atexit.register(record)


def exits(out: Path) -> list[str]:
    """What :func:`record_exit` wrote, one entry per launched process that exited."""
    return sorted(f.read_text() for f in out.glob("exit-*"))


def sitecustomize_dir(root: Path) -> Path:
    """A directory to put on ``PYTHONPATH`` so that launched processes count their steps
    (``NDECONV_TEST_STEP_DIR``) and stop after an epoch (``NDECONV_TEST_INTERRUPT_AFTER``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"if os.environ.get({COUNT_ENV!r}):\n"
        f"    sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "    import stepcount\n"
        f"    after = os.environ.get({INTERRUPT_ENV!r})\n"
        f"    stepcount.install(__import__('pathlib').Path(os.environ[{COUNT_ENV!r}]), int(after) if after else None)\n"
        f"    stepcount.record_exit(__import__('pathlib').Path(os.environ[{COUNT_ENV!r}]))\n")
    return root


def environment(root: Path, out: Path, interrupt_after: int | None) -> dict[str, str]:
    """The environment of a launched run whose processes count their steps into ``out``."""
    env = {**os.environ, COUNT_ENV: str(out)}
    env["PYTHONPATH"] = os.pathsep.join([str(sitecustomize_dir(root)), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop(INTERRUPT_ENV, None)
    if interrupt_after is not None:
        env[INTERRUPT_ENV] = str(interrupt_after)
    return env
