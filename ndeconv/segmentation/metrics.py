"""Semantic-segmentation metrics from a confusion matrix: mean IoU and pixel accuracy, as fastai metrics."""

from __future__ import annotations

import torch
from fastai.metrics import Metric
from torch import Tensor

__all__ = ["confusion_matrix", "mean_iou", "pixel_accuracy", "SegmentationMetric", "MeanIoU", "PixelAccuracy"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``(C, C)`` counts, rows the true class, columns the predicted one; ``ignore_index`` pixels
    (and any target outside ``0..C-1``) are left out."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(conf: Tensor) -> float:
    """Mean over classes of ``TP / (TP + FP + FN)``, counting only classes that occur in the
    target or the prediction (a class absent from both has no IoU)."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def pixel_accuracy(conf: Tensor) -> float:
    """Correct pixels over all counted (non-ignored) pixels."""
    total = conf.sum()
    return float(conf.diagonal().sum().double() / total) if total > 0 else float("nan")


class SegmentationMetric(Metric):
    """A fastai metric that accumulates the confusion matrix over the validation set and reports
    ``fn(conf)`` once per epoch (not an average of per-batch values, which would weight small
    batches and rare classes wrongly)."""

    def __init__(self, fn, name: str, num_classes: int, ignore_index: int = 255):
        self.fn, self._name, self.num_classes, self.ignore_index = fn, name, num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        self.conf = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def accumulate(self, learn) -> None:
        pred = learn.pred.argmax(1)
        self.conf += confusion_matrix(pred, learn.y, self.num_classes, self.ignore_index).cpu()

    @property
    def value(self) -> float:
        return self.fn(self.conf)

    @property
    def name(self) -> str:
        return self._name


def MeanIoU(num_classes: int, ignore_index: int = 255) -> SegmentationMetric:  # noqa: N802 (fastai style)
    """Mean intersection over union, named ``miou``."""
    return SegmentationMetric(mean_iou, "miou", num_classes, ignore_index)


def PixelAccuracy(num_classes: int, ignore_index: int = 255) -> SegmentationMetric:  # noqa: N802
    """Pixel accuracy over non-ignored pixels, named ``pixel_accuracy``."""
    return SegmentationMetric(pixel_accuracy, "pixel_accuracy", num_classes, ignore_index)
