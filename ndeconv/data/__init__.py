"""Data: sources through ``datasets``, a uint8 tensor cache, per-batch augmentation, fastai loaders."""

from .augment import BatchTransform, center_crop, normalize, random_crop, random_flip, random_resized_crop
from .loaders import make_dataloaders
from .sources import Splits, digits_dataset, load_splits
from .tensors import cache_dir, cached_split, decode_image, decode_split

__all__ = [
    "BatchTransform", "center_crop", "normalize", "random_crop", "random_flip", "random_resized_crop",
    "make_dataloaders", "Splits", "digits_dataset", "load_splits", "cache_dir", "cached_split", "decode_image",
    "decode_split",
]
