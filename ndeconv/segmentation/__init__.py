"""Semantic segmentation: image+mask data, joint augmentation, models with a segmentation head,
and mean IoU / pixel accuracy metrics. The training loop, run directories and ``ndeconv compare``
are the classifiers' (``task: segmentation`` in a recipe).

The metrics are fastai metrics and are imported when first used, so building a segmentation
model (loading a trained one) does not load the training stack.
"""

from .augment import SegmentationTransform, scale_crop_flip
from .data import CITYSCAPES_TRAIN_IDS, cityscapes_dataset, decode_segmentation, digit_canvas_dataset
from .models import BackboneFCN, FCNHead, MainOutput, create_segmentation_model

_METRICS = ("MeanIoU", "PixelAccuracy", "confusion_matrix", "mean_iou", "pixel_accuracy")

__all__ = [
    "SegmentationTransform", "scale_crop_flip", "CITYSCAPES_TRAIN_IDS", "cityscapes_dataset", "decode_segmentation",
    "digit_canvas_dataset", *_METRICS, "BackboneFCN", "FCNHead", "MainOutput", "create_segmentation_model",
]


def __getattr__(name: str):
    if name in _METRICS:
        from . import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'ndeconv.segmentation' has no attribute {name!r}")
