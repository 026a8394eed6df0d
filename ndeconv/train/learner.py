"""Build what a recipe trains with: the Accelerator and the fastai Learner (the model comes from
:func:`ndeconv.rundir.build_model`)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam, OptimWrapper
from fastcore.basics import noop
from torch import nn

from ..recipe import Recipe
from ..tasks import Task
from .averaging import LookaheadCallback
from .budget import StepLimit
from .callbacks import AcceleratorCallback, DataEpochCallback, DivergenceCallback
from .evaluation import AccuracyWithoutTTA, TTACallback
from .length import RunLength
from .stem import PatchWhiteningCallback, whitening_stems
from .tracking import check_trackers

__all__ = ["process_state", "make_accelerator", "build_learner", "feature_callbacks", "fit_recipe", "shift_splitter"]

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


def build_learner(recipe: Recipe, dls: DataLoaders, model: nn.Module, accelerator: Accelerator, task: Task,
                  length: RunLength | None = None, cbs: list | None = None) -> Learner:
    """A fastai Learner with the recipe's optimizer, loss and metrics, driven by ``accelerator``, that
    stops at the first non-finite loss or weight (:class:`DivergenceCallback`), with ``cbs`` and,
    given the run's ``length``, the recipe's training features (:func:`feature_callbacks`; without
    it, the bare learner whose steps a budget's calibration times).

    ``optim.norm_lr_scale`` splits the parameters in two groups (:func:`shift_splitter`); fastai's
    console progress is replaced by ndeconv's rich callback.
    """
    o = recipe.optim
    metrics = task.metrics(recipe) + ([AccuracyWithoutTTA()] if recipe.train.tta else [])
    splitter = {} if o.norm_lr_scale == 1 else {"splitter": shift_splitter}
    learn = Learner(dls, model, loss_func=task.loss(recipe), opt_func=_optimizer(recipe), lr=o.lr, metrics=metrics,
                    wd=o.weight_decay, wd_bn_bias=True, **splitter,
                    cbs=[AcceleratorCallback(accelerator), DivergenceCallback(),
                         *(feature_callbacks(recipe, model, length) if length else []), *(cbs or [])])
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def feature_callbacks(recipe: Recipe, model: nn.Module, length: RunLength) -> list[Callback]:
    """The recipe's training features as callbacks: the run's step limit (a budget, a step count or a
    fraction of an epoch), the alternating flip's epoch, fitting a patch-whitening stem, weight
    averaging (``optim.lookahead_every``, over the run's ``length``) and test-time augmentation."""
    o, cbs = recipe.optim, []
    if length.partial or recipe.train.steps is not None:
        cbs.append(StepLimit(length.steps))
    if recipe.augment.flip == "alternate":
        cbs.append(DataEpochCallback())
    if whitening_stems(model):
        cbs.append(PatchWhiteningCallback(seed=recipe.train.seed))
    if o.lookahead_every:
        cbs.append(LookaheadCallback(o.lookahead_every, o.lookahead_decay, o.lookahead_power, length.steps))
    if recipe.train.tta:
        cbs.append(TTACallback())
    return cbs


def _schedule(recipe: Recipe, lr: float | np.ndarray):
    """The fastai schedule of ``optim.schedule`` for peak rates ``lr`` (one per parameter group)."""
    o = recipe.optim
    if o.schedule == "cosine":
        return SchedCos(lr, 0.0)
    points = o.lr_points
    spans = [b[0] - a[0] for a, b in zip(points, points[1:])]
    return combine_scheds(spans, [SchedLin(lr * a[1], lr * b[1]) for a, b in zip(points, points[1:])])


def fit_recipe(learn: Learner, recipe: Recipe, length: RunLength, start_epoch: int = 0) -> None:
    """Train with the recipe's per-iteration schedule over the epochs of ``length``, from ``start_epoch``
    (a :class:`StepLimit` among the learner's callbacks ends a partial last epoch)."""
    o = recipe.optim
    lr, wd = o.lr, o.weight_decay
    if o.norm_lr_scale != 1:  # the shifts' group: the rate scaled, the decay per step the same
        lr, wd = np.array([lr, lr * o.norm_lr_scale]), np.array([wd, wd / o.norm_lr_scale])
    if o.schedule == "one_cycle":
        learn.fit_one_cycle(length.epochs, lr, wd=wd, start_epoch=start_epoch)
    elif o.schedule in ("cosine", "piecewise_linear"):
        learn.fit(length.epochs, lr, wd=wd, cbs=[ParamScheduler({"lr": _schedule(recipe, lr)})],
                  start_epoch=start_epoch)
    else:
        learn.fit(length.epochs, lr, wd=wd, start_epoch=start_epoch)
