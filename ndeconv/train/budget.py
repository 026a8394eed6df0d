"""Time-budgeted training: measure the step time, fix the number of optimizer steps, end there.

A budget (``train.budget: 90s``) is turned into a step count once, before training: the run takes
a few warm-up steps, times the next ones, and keeps ``floor(budget / step_seconds)`` steps
(:func:`calibrate`). The model, optimizer and random states are put back afterwards, so the run
then trains as if calibration never happened, and the recorded count makes it reproducible:
a resumed or repeated run takes exactly the same steps. :class:`StepLimit` spans the recipe's
schedule over those steps and ends training after the last one, mid-epoch if need be; that
epoch is validated as any other.
"""

from __future__ import annotations

import copy
import itertools
import math
import time

import torch
from fastai.callback.core import Callback, CancelFitException, TrainEvalCallback
from fastai.learner import CastToTensor, Recorder

from ..layers._whitening import WhiteningLayer
from .checkpoint import rng_state, set_rng_state

__all__ = ["WARMUP_STEPS", "TIMED_STEPS", "StepTimer", "FirstBatches", "StepLimit", "measure_step_seconds",
           "calibrate", "steps_for_budget"]

WARMUP_STEPS = 2
TIMED_STEPS = 8


def steps_for_budget(budget_seconds: float, step_seconds: float) -> int:
    """The optimizer steps that fit ``budget_seconds`` at ``step_seconds`` each (at least one)."""
    return max(1, math.floor(budget_seconds / step_seconds))


class StepTimer(Callback):
    """Time ``timed`` training steps after ``warmup`` untimed ones, then stop the fit.

    A step's time runs from the end of the previous step (or the start of the epoch's training)
    to the end of its own: loading its batch and every callback included, a validation that falls
    between two steps left out.
    """

    order = 99  # after every other callback's after_batch: a step is all of its work

    def __init__(self, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS):
        self.warmup, self.timed = warmup, timed
        self.seconds: float | None = None

    def before_fit(self) -> None:
        self._done, self._total = 0, 0.0

    def before_train(self) -> None:
        self._last = time.perf_counter()

    def after_batch(self) -> None:
        if not self.training:
            return
        now = time.perf_counter()
        self._done += 1
        if self._done > self.warmup:
            self._total += now - self._last
        self._last = now
        if self._done == self.warmup + self.timed:
            self.seconds = self._total / self.timed
            raise CancelFitException()


def measure_step_seconds(learn, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS) -> float:
    """Seconds per training step of ``learn`` (data, forward, backward, optimizer step), measured on
    real batches and then undone: weights, buffers, optimizer and random states are restored.

    Only the training machinery runs (fastai's core callbacks, the Accelerator's and the
    divergence check, which every step of the run pays): the run directory, progress, trackers
    and any extra callbacks never see these steps. With several
    processes every rank takes the same steps and all keep the slowest rank's time.
    """
    from .callbacks import AcceleratorCallback, DivergenceCallback

    model = learn.model.module if hasattr(learn.model, "module") else learn.model
    saved_model, saved_rng = copy.deepcopy(model.state_dict()), rng_state(learn)
    saved_opt = copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None
    machinery = (TrainEvalCallback, Recorder, CastToTensor, AcceleratorCallback, DivergenceCallback)
    left_out = [cb for cb in learn.cbs if not isinstance(cb, machinery)]
    timer = StepTimer(warmup, timed)
    with learn.removed_cbs(left_out):  # an epoch takes at least one step; the timer ends the fit once done
        learn.fit(warmup + timed, cbs=[timer])
    model.load_state_dict(saved_model)
    if saved_opt is None:
        learn.opt = None
    else:
        learn.opt.load_state_dict(saved_opt)
    set_rng_state(learn, saved_rng)
    if timer.seconds is None:
        raise RuntimeError("step timing did not complete")
    seconds = torch.tensor([timer.seconds], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    return float(seconds.item())


def calibrate(learn, budget_seconds: float) -> tuple[int, float]:
    """``(steps, step_seconds)`` for a budget: the steps that fit it at ``learn``'s measured step time.

    Layers that recompute their statistics every k-th step only (``update_every``) make steps of
    two costs; the timed steps then span whole k-step cycles, so their mean is the run's.
    """
    cycle = max((getattr(m, "update_every", 1) for m in learn.model.modules() if isinstance(m, WhiteningLayer)),
                default=1)
    step_seconds = round(measure_step_seconds(learn, WARMUP_STEPS, math.ceil(TIMED_STEPS / cycle) * cycle), 6)
    return steps_for_budget(budget_seconds, step_seconds), step_seconds  # as recorded: one follows from the other


class FirstBatches:
    """The first ``n`` batches of a data loader (the partial last epoch of a step-limited run)."""

    def __init__(self, dl, n: int):
        self.dl, self.n = dl, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.dl), self.n)

    def __getattr__(self, name: str):
        return getattr(self.dl, name)


class StepLimit(Callback):
    """Train for exactly ``steps`` optimizer steps: the schedule's position is ``step / steps``, and
    the epoch that holds the last step trains only up to it (then validates as any other).

    The step is counted from the epoch and the batch index, so a resumed run continues the same
    schedule.
    """

    order = 90  # after the Recorder and ParamScheduler have seen the batch

    def __init__(self, steps: int):
        self.steps = steps

    def before_train(self) -> None:
        per_epoch = len(self.dls.train)
        done = self.epoch * per_epoch
        if done + per_epoch > self.steps:
            self.learn.dl = FirstBatches(self.dl, self.steps - done)
        self.learn.pct_train = min(1.0, done / self.steps)

    def after_batch(self) -> None:
        if self.training:  # the position of the next step, for the schedule
            self.learn.pct_train = min(1.0, (self.epoch * len(self.dls.train) + self.iter + 1) / self.steps)
