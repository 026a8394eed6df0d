"""Semantic segmentation: image+mask data, joint augmentation, models with a segmentation head,
and mean IoU / pixel accuracy metrics. The training loop, run directories and ``ndeconv compare``
are the classifiers' (``task: segmentation`` in a recipe)."""

from .augment import SegmentationTransform, scale_crop_flip
from .data import CITYSCAPES_TRAIN_IDS, cityscapes_dataset, decode_segmentation, digit_canvas_dataset
from .metrics import MeanIoU, PixelAccuracy, confusion_matrix, mean_iou, pixel_accuracy
from .models import BackboneFCN, FCNHead, MainOutput, create_segmentation_model

__all__ = [
    "SegmentationTransform", "scale_crop_flip", "CITYSCAPES_TRAIN_IDS", "cityscapes_dataset", "decode_segmentation",
    "digit_canvas_dataset", "MeanIoU", "PixelAccuracy", "confusion_matrix", "mean_iou", "pixel_accuracy",
    "BackboneFCN", "FCNHead", "MainOutput", "create_segmentation_model",
]
