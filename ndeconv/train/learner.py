"""Build what a recipe trains with: the Accelerator and the fastai Learner (the model comes from
:func:`ndeconv.rundir.build_model`)."""

from __future__ import annotations

import math
from functools import partial

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from fastcore.basics import noop
from torch import nn

from ..recipe import Recipe
from ..tasks import get_task
from .budget import StepLimit
from .callbacks import AcceleratorCallback, DivergenceCallback
from .tracking import check_trackers

__all__ = ["process_state", "make_accelerator", "build_learner", "run_epochs", "fit_recipe"]

_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def process_state() -> PartialState:
    """This process's place in a launch (rank, world size), initialising Accelerate for CPU when there is no GPU.

    Under ``accelerate launch --multi_gpu`` on a CPU-only machine this gives gloo processes;
    a bare ``PartialState()`` would silently fall back to one process each.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(precision: str, cpu: bool | None = None, log_with: list[str] | None = None,
                     project_dir: str | None = None) -> Accelerator:
    """An ``Accelerator`` with the recipe's mixed precision (``fp32`` means none) and trackers
    (``log_with``, writing under ``project_dir``).

    Accelerate keeps one precision per process; a later run in the same process (a notebook
    comparing fp32 and bf16) resets that part of its state, keeping the process group.
    """
    mixed = _MIXED[precision]
    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)
    trackers = check_trackers(log_with or [])
    return Accelerator(mixed_precision=mixed, cpu=cpu, log_with=trackers or None, project_dir=project_dir)


def build_learner(recipe: Recipe, dls: DataLoaders, model: nn.Module, accelerator: Accelerator,
                  cbs: list | None = None) -> Learner:
    """A fastai Learner with the recipe's optimizer and metrics, driven by ``accelerator``, that
    stops at the first non-finite loss or weight (:class:`DivergenceCallback`).

    SGD uses classic momentum and L2 weight decay on every parameter, as ``torch.optim.SGD``
    did in the paper's code; AdamW decouples it. The loss and metrics are the recipe's task's
    (:mod:`ndeconv.tasks`). fastai's console progress is replaced by ndeconv's rich callback.
    """
    o = recipe.optim
    if o.name == "sgd":
        opt_func = partial(SGD, mom=o.momentum, decouple_wd=False)
    else:
        opt_func = partial(Adam, mom=o.momentum, decouple_wd=True)
    task = get_task(recipe.task)
    learn = Learner(dls, model, loss_func=task.loss(recipe), opt_func=opt_func, lr=o.lr, metrics=task.metrics(recipe),
                    wd=o.weight_decay, wd_bn_bias=True,
                    cbs=[AcceleratorCallback(accelerator), DivergenceCallback(), *(cbs or [])])
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def run_epochs(learn: Learner, recipe: Recipe) -> int:
    """Epochs the run spans: ``train.epochs``, or enough for ``train.steps`` (the last one partial)."""
    if recipe.train.steps is None:
        return recipe.train.epochs
    world = learn.accelerator.accelerator.num_processes if hasattr(learn, "accelerator") else 1
    return math.ceil(recipe.train.steps / learn.dls.train.batches_per_process(world))


def fit_recipe(learn: Learner, recipe: Recipe, start_epoch: int = 0) -> None:
    """Train with the recipe's per-iteration schedule, from ``start_epoch``: for ``train.epochs``,
    or over exactly ``train.steps`` optimizer steps (a budgeted run's calibrated count)."""
    o, epochs = recipe.optim, run_epochs(learn, recipe)
    cbs = [] if recipe.train.steps is None else [StepLimit(recipe.train.steps)]
    if o.schedule == "one_cycle":
        learn.fit_one_cycle(epochs, o.lr, wd=o.weight_decay, start_epoch=start_epoch, cbs=cbs)
    elif o.schedule == "cosine":
        learn.fit(epochs, o.lr, wd=o.weight_decay, cbs=[ParamScheduler({"lr": SchedCos(o.lr, 0.0)}), *cbs],
                  start_epoch=start_epoch)
    else:
        learn.fit(epochs, o.lr, wd=o.weight_decay, start_epoch=start_epoch, cbs=cbs)
