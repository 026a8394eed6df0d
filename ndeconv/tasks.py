"""The tasks a recipe can train (its ``task:`` key), a registry in the style of the conversion rules.

Each task supplies what differs between tasks: the bare architecture for a recipe, its data
loaders, loss and metrics, the headline metric that tables judge it by, the labels of its model
card, its embedded datasets and the model names it can build. Nothing outside
this module tests a task's name; a new task is one :func:`register_task` call::

    ndeconv.tasks.register_task(Task(name="regression", metric="mae", ...))

Floor: the recipe checks its task here, so this module imports nothing of ndeconv but its errors;
what a task builds (timm, datasets, fastai) is imported when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RecipeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .recipe import Recipe

__all__ = ["Task", "register_task", "get_task", "list_tasks", "task_of_builtin", "metric_label", "top5"]


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


# --- classification --------------------------------------------------------------------------

def _is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


def _classifier(recipe: Recipe) -> nn.Module:
    """``timm.create_model`` for the recipe's classes and channels."""
    import timm

    m, d = recipe.model, recipe.data
    if not timm.is_model(m.name):
        raise RecipeError(f"model.name: unknown timm model '{m.name}' (see timm.list_models() or `ndeconv models`)")
    try:
        return timm.create_model(m.name, pretrained=False, num_classes=d.num_classes, in_chans=d.channels,
                                 drop_rate=m.drop_rate)
    except TypeError as e:
        raise RecipeError(f"model.name: cannot build '{m.name}' for this data ({e})") from None


def _classification_loaders(recipe: Recipe) -> Any:
    from .data import load_splits, make_dataloaders

    return make_dataloaders(recipe, splits=load_splits(recipe.data))


def _cross_entropy(recipe: Recipe) -> nn.Module:
    """Cross-entropy; fastai's label-smoothed one with ``optim.label_smoothing``."""
    from torch import nn

    if recipe.optim.label_smoothing:
        from fastai.losses import LabelSmoothingCrossEntropyFlat

        return LabelSmoothingCrossEntropyFlat(eps=recipe.optim.label_smoothing)
    return nn.CrossEntropyLoss()


def top5(inp: Tensor, targ: Tensor) -> Tensor:
    """Top-5 accuracy (a fastai metric; its name is the ``top5`` column)."""
    from fastai.metrics import top_k_accuracy

    return top_k_accuracy(inp, targ, k=5)


def _classification_metrics(recipe: Recipe) -> list:
    """Accuracy, and top-5 accuracy from 100 classes."""
    from fastai.metrics import accuracy

    return [accuracy] + ([top5] if recipe.data.num_classes >= 100 else [])


register_task(Task(
    name="classification", metric="accuracy", metric_label="accuracy", card_metric="top-1 accuracy",
    hub_tag="image-classification", hub_name="Image Classification", build_model=_classifier,
    dataloaders=_classification_loaders, loss=_cross_entropy, metrics=_classification_metrics,
    accepts_model=_is_timm_model, builtins=("digits",)))


# --- segmentation ----------------------------------------------------------------------------

def _segmenter(recipe: Recipe) -> nn.Module:
    from .segmentation.models import create_segmentation_model

    return create_segmentation_model(recipe.model.name, recipe.data.num_classes, recipe.data.channels,
                                     recipe.model.feature_level)


def _segmentation_loaders(recipe: Recipe) -> Any:
    from .segmentation.loaders import load_segmentation_splits, make_segmentation_dataloaders

    return make_segmentation_dataloaders(recipe, splits=load_segmentation_splits(recipe.data))


def _pixel_cross_entropy(recipe: Recipe) -> nn.Module:
    """Per-pixel cross-entropy; unlabelled pixels (``data.ignore_index``) count in neither loss nor metrics."""
    from torch import nn

    return nn.CrossEntropyLoss(ignore_index=recipe.data.ignore_index, label_smoothing=recipe.optim.label_smoothing)


def _segmentation_metrics(recipe: Recipe) -> list:
    from .segmentation.metrics import MeanIoU, PixelAccuracy

    d = recipe.data
    return [MeanIoU(d.num_classes, d.ignore_index), PixelAccuracy(d.num_classes, d.ignore_index)]


def _is_segmentation_model(name: str) -> bool:
    """A timm backbone, or ``torchvision:<name>`` for torchvision's segmentation models."""
    return name.startswith("torchvision:") or _is_timm_model(name)


register_task(Task(
    name="segmentation", metric="miou", metric_label="mean IoU", card_metric="mean IoU",
    hub_tag="image-segmentation", hub_name="Image Segmentation", build_model=_segmenter,
    dataloaders=_segmentation_loaders, loss=_pixel_cross_entropy, metrics=_segmentation_metrics,
    accepts_model=_is_segmentation_model, builtins=("digit_canvas",)))
