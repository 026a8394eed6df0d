"""Data: sources through ``datasets``, a uint8 tensor cache, per-batch augmentation, fastai loaders.

The loaders (:func:`make_dataloaders`) need fastai and are imported when first used, so reading a
source or decoding images does not load the training stack.
"""

from .augment import BatchTransform, center_crop, normalize, random_crop, random_flip, random_resized_crop
from .sources import Splits, digits_dataset, load_path, load_splits
from .tensors import cache_dir, cached_split, decode_image, decode_split

__all__ = [
    "BatchTransform", "center_crop", "normalize", "random_crop", "random_flip", "random_resized_crop",
    "make_dataloaders", "Splits", "digits_dataset", "load_path", "load_splits", "cache_dir", "cached_split",
    "decode_image", "decode_split",
]


def __getattr__(name: str):
    if name == "make_dataloaders":
        from .loaders import make_dataloaders

        return make_dataloaders
    raise AttributeError(f"module 'ndeconv.data' has no attribute {name!r}")
