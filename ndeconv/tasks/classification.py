"""The classification task: a timm classifier, image/label data, cross-entropy, accuracy (and top-5
from 100 classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import RecipeError
from .registry import Task, register_task

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..recipe import Recipe

__all__ = ["top5", "is_timm_model"]


def is_timm_model(name: str) -> bool:
    """Whether timm can build ``name``."""
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
    from ..data import load_splits, make_dataloaders

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
    accepts_model=is_timm_model, builtins=("digits",), tta=True))


