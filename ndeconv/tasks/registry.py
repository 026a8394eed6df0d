"""The tasks a recipe can train (its ``task:`` key), a registry in the style of the conversion rules.

Each task supplies what differs between tasks: the bare architecture for a recipe, its data
loaders, loss and metrics, the headline metric that tables judge it by, the labels of its model
card, its embedded datasets and the model names it can build. Nothing outside
this module tests a task's name; a new task is one :func:`register_task` call::

    ndeconv.tasks.register_task(Task(name="regression", metric="mae", ...))

The registry is a leaf (it imports nothing of ndeconv but its errors); the built-in tasks are
modules of their own that register themselves (:mod:`ndeconv.tasks.classification`,
:mod:`ndeconv.tasks.segmentation`), and what a task builds (timm, datasets, fastai) is imported
when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError
from ..recipe.schema import quote

if TYPE_CHECKING:
    from torch import nn

    from ..recipe import Recipe

__all__ = ["Task", "register_task", "get_task", "list_tasks", "task_of_builtin", "metric_label", "resolve_task"]


@dataclass(frozen=True)
class Task:
    """What a task brings to a run.

    ``metric`` is the headline metric's key in ``metrics.csv`` and ``results.json`` and
    ``metric_label`` how tables name it; ``card_metric``, ``hub_tag`` and ``hub_name`` label the
    model card (the Hugging Face pipeline tag and its title); ``builtins`` are the embedded
    datasets of this task (``data.builtin``). ``build_model(recipe)`` gives the architecture
    before initialisation and conversion, ``dataloaders(recipe)`` fastai ``DataLoaders``,
    ``loss(recipe)`` the loss module, ``metrics(recipe)`` fastai metrics (the headline one first),
    ``accepts_model(name)`` whether a model name can be built at all (checked before training).
    ``dense`` tasks predict a class per pixel: evaluation counts pixels and prediction writes masks.
    ``tta``: whether validation can average mirrored and shifted views (``train.tta``).
    """

    name: str
    metric: str
    metric_label: str
    card_metric: str
    hub_tag: str
    hub_name: str
    build_model: Callable[[Recipe], nn.Module]
    dataloaders: Callable[[Recipe], Any]
    loss: Callable[[Recipe], nn.Module]
    metrics: Callable[[Recipe], list]
    accepts_model: Callable[[str], bool]
    builtins: tuple[str, ...] = ()
    dense: bool = False
    tta: bool = False


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry (replacing one of the same name)."""
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown one is a :class:`RecipeError` listing the known ones."""
    if name not in _TASKS:
        raise RecipeError(f"task: unknown task '{name}' (known: {', '.join(_TASKS)})")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """The names of the registered tasks."""
    return list(_TASKS)


def task_of_builtin(builtin: str) -> str | None:
    """The task an embedded dataset belongs to, or None for a name no task embeds."""
    return next((t.name for t in _TASKS.values() if builtin in t.builtins), None)


def metric_label(metric: str) -> str:
    """How tables name a headline metric key (``miou``: ``mean IoU``); unknown keys stay as they are."""
    return next((t.metric_label for t in _TASKS.values() if t.metric == metric), metric)


def resolve_task(recipe: Recipe) -> Task:
    """The recipe's task, checked against its data: a registered task, and an embedded dataset
    (``data.builtin``) of that task. Every run resolves its recipe's task once, here."""
    task = get_task(recipe.task)
    builtin = recipe.data.builtin
    if builtin is not None:
        kind = task_of_builtin(builtin)
        if kind is None:
            raise RecipeError(f"data.builtin must be one of {', '.join(task.builtins)}, got {quote(builtin)}")
        if kind != recipe.task:
            raise RecipeError(f"data.builtin: '{builtin}' is a {kind} set, the recipe's task is {recipe.task}")
    if recipe.train.tta and not task.tta:
        raise RecipeError(f"train.tta: test-time augmentation is not available for task {recipe.task}")
    return task
