"""The segmentation task: an FCN head on a timm backbone or a torchvision model, image/mask data, per-pixel
cross-entropy, mean IoU and pixel accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .classification import is_timm_model
from .registry import Task, register_task

if TYPE_CHECKING:
    from torch import nn

    from ..recipe import Recipe

__all__ = []


def _segmenter(recipe: Recipe) -> nn.Module:
    from ..segmentation.models import create_segmentation_model

    return create_segmentation_model(recipe.model.name, recipe.data.num_classes, recipe.data.channels,
                                     recipe.model.feature_level)


def _segmentation_loaders(recipe: Recipe) -> Any:
    from ..segmentation.loaders import load_segmentation_splits, make_segmentation_dataloaders

    return make_segmentation_dataloaders(recipe, splits=load_segmentation_splits(recipe.data))


def _pixel_cross_entropy(recipe: Recipe) -> nn.Module:
    """Per-pixel cross-entropy; unlabelled pixels (``data.ignore_index``) count in neither loss nor metrics."""
    from torch import nn

    return nn.CrossEntropyLoss(ignore_index=recipe.data.ignore_index, label_smoothing=recipe.optim.label_smoothing)


def _segmentation_metrics(recipe: Recipe) -> list:
    from ..segmentation.metrics import MeanIoU, PixelAccuracy

    d = recipe.data
    return [MeanIoU(d.num_classes, d.ignore_index), PixelAccuracy(d.num_classes, d.ignore_index)]


def _is_segmentation_model(name: str) -> bool:
    """A timm backbone, or ``torchvision:<name>`` for torchvision's segmentation models."""
    return name.startswith("torchvision:") or is_timm_model(name)


register_task(Task(
    name="segmentation", metric="miou", metric_label="mean IoU", card_metric="mean IoU",
    hub_tag="image-segmentation", hub_name="Image Segmentation", build_model=_segmenter,
    dataloaders=_segmentation_loaders, loss=_pixel_cross_entropy, metrics=_segmentation_metrics,
    accepts_model=_is_segmentation_model, builtins=("digit_canvas",), dense=True))
