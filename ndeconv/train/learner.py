"""Build what a recipe trains with: the Accelerator and the fastai Learner (the model comes from
:func:`ndeconv.rundir.build_model`)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam, OptimWrapper
from fastcore.basics import noop
from torch import nn

from ..recipe import Recipe
from ..tasks import Task, resolve_task
from .averaging import LookaheadCallback
from .budget import StepLimit
from .callbacks import AcceleratorCallback, DataEpochCallback, DivergenceCallback
from .evaluation import AccuracyWithoutTTA, TTACallback
from .stem import PatchWhiteningCallback, whitening_stems
from .tracking import check_trackers

__all__ = ["process_state", "make_accelerator", "build_learner", "run_epochs", "run_steps", "fit_recipe",
           "shift_splitter"]

#: Normalisation layers whose shift ``optim.norm_lr_scale`` applies to (not a patch-whitening
#: stem's bias: the published recipe trains it at the base rate).
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

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


def shift_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups: everything, and the shifts (biases) of the normalisation layers, which
    ``optim.norm_lr_scale`` trains at a scaled rate."""
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, _NORMS) and getattr(m, "bias", None) is not None}
    params = list(model.parameters())
    return [[p for p in params if id(p) not in shifts], [p for p in params if id(p) in shifts]]


def _optimizer(recipe: Recipe):
    """The fastai optimizer constructor: SGD with classic momentum and L2 weight decay on every
    parameter (as ``torch.optim.SGD``, the paper's), ``torch.optim.SGD`` itself with Nesterov
    momentum, or AdamW (decay decoupled)."""
    o = recipe.optim
    if o.name == "adamw":
        return partial(Adam, mom=o.momentum, decouple_wd=True)
    if o.nesterov:
        return partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=o.momentum, nesterov=True))
    return partial(SGD, mom=o.momentum, decouple_wd=False)


def build_learner(recipe: Recipe, dls: DataLoaders, model: nn.Module, accelerator: Accelerator,
                  cbs: list | None = None, task: Task | None = None) -> Learner:
    """A fastai Learner with the recipe's optimizer, loss and metrics, driven by ``accelerator``, that
    stops at the first non-finite loss or weight (:class:`DivergenceCallback`).

    The loss and metrics are the recipe's task's (``task``, resolved here if not given;
    :mod:`ndeconv.tasks`); ``optim.norm_lr_scale``
    splits the parameters in two groups (:func:`shift_splitter`). The recipe's other training
    features are callbacks: the alternating flip's epoch, fitting a patch-whitening stem,
    weight averaging (``optim.lookahead_every``) and test-time augmentation (``train.tta``, with
    ``accuracy_no_tta`` beside). fastai's console progress is replaced by ndeconv's rich callback.
    """
    o, task = recipe.optim, task or resolve_task(recipe)
    extra: list = []
    if recipe.augment.flip == "alternate":
        extra.append(DataEpochCallback())
    if whitening_stems(model):
        extra.append(PatchWhiteningCallback(seed=recipe.train.seed))
    if o.lookahead_every:
        extra.append(LookaheadCallback(o.lookahead_every, o.lookahead_decay, o.lookahead_power,
                                       run_steps(dls, recipe, accelerator.num_processes)))
    metrics = task.metrics(recipe)
    if recipe.train.tta:
        extra.append(TTACallback())
        metrics = [*metrics, AccuracyWithoutTTA()]
    splitter = {} if o.norm_lr_scale == 1 else {"splitter": shift_splitter}
    learn = Learner(dls, model, loss_func=task.loss(recipe), opt_func=_optimizer(recipe), lr=o.lr, metrics=metrics,
                    wd=o.weight_decay, wd_bn_bias=True, **splitter,
                    cbs=[AcceleratorCallback(accelerator), DivergenceCallback(), *extra, *(cbs or [])])
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def run_steps(dls: DataLoaders, recipe: Recipe, world: int = 1) -> int:
    """Optimizer steps the run takes: ``train.steps``, or ``train.epochs`` of the training loader's
    batches (a fraction of an epoch rounded up)."""
    if recipe.train.steps is not None:
        return recipe.train.steps
    return math.ceil(recipe.train.epochs * dls.train.batches_per_process(world))


def run_epochs(learn: Learner, recipe: Recipe) -> int:
    """Epochs the run spans: ``train.epochs`` (rounded up), or enough for ``train.steps`` (the last one partial)."""
    if recipe.train.steps is None:
        return math.ceil(recipe.train.epochs)
    return math.ceil(recipe.train.steps / learn.dls.train.batches_per_process(_world(learn)))


def _schedule(recipe: Recipe, lr: float | np.ndarray):
    """The fastai schedule of ``optim.schedule`` for peak rates ``lr`` (one per parameter group)."""
    o = recipe.optim
    if o.schedule == "cosine":
        return SchedCos(lr, 0.0)
    points = o.lr_points
    spans = [b[0] - a[0] for a, b in zip(points, points[1:])]
    return combine_scheds(spans, [SchedLin(lr * a[1], lr * b[1]) for a, b in zip(points, points[1:])])


def fit_recipe(learn: Learner, recipe: Recipe, start_epoch: int = 0) -> None:
    """Train with the recipe's per-iteration schedule, from ``start_epoch``: for ``train.epochs``,
    or over exactly ``train.steps`` optimizer steps (a budgeted run's calibrated count, or a
    fractional number of epochs)."""
    o, epochs = recipe.optim, run_epochs(learn, recipe)
    fractional = recipe.train.steps is None and recipe.train.epochs != epochs
    cbs = [StepLimit(run_steps(learn.dls, recipe, _world(learn)))] if recipe.train.steps is not None or fractional \
        else []
    lr, wd = o.lr, o.weight_decay
    if o.norm_lr_scale != 1:  # the shifts' group: the rate scaled, the decay per step the same
        lr, wd = np.array([lr, lr * o.norm_lr_scale]), np.array([wd, wd / o.norm_lr_scale])
    if o.schedule == "one_cycle":
        learn.fit_one_cycle(epochs, lr, wd=wd, start_epoch=start_epoch, cbs=cbs)
    elif o.schedule in ("cosine", "piecewise_linear"):
        learn.fit(epochs, lr, wd=wd, cbs=[ParamScheduler({"lr": _schedule(recipe, lr)}), *cbs],
                  start_epoch=start_epoch)
    else:
        learn.fit(epochs, lr, wd=wd, start_epoch=start_epoch, cbs=cbs)


def _world(learn: Learner) -> int:
    return learn.accelerator.accelerator.num_processes if hasattr(learn, "accelerator") else 1
