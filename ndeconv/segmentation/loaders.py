"""fastai ``DataLoaders`` for a segmentation recipe: uint8 images and masks in memory, jointly
augmented on the device by :class:`~ndeconv.segmentation.augment.SegmentationTransform`."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from fastai.data.core import DataLoaders

from ..data.loaders import TensorImageDL, subset_indices
from ..data.sources import check_splits, load_hub, load_path
from ..recipe import DataSpec, Recipe
from .augment import SegmentationTransform
from .data import CITYSCAPES_TRAIN_IDS, cityscapes_dataset, decode_segmentation, digit_canvas_dataset

__all__ = ["SegmentationSplits", "load_segmentation_splits", "make_segmentation_dataloaders"]


class SegmentationSplits:
    """The training and validation splits of an image+mask source and how to read them."""

    def __init__(self, train: datasets.Dataset, valid: datasets.Dataset, image_column: str, mask_column: str,
                 label_map: dict[int, int] | None = None):
        self.train, self.valid = train, valid
        self.image_column, self.mask_column, self.label_map = image_column, mask_column, label_map


def load_segmentation_splits(spec: DataSpec, source: str = "data") -> SegmentationSplits:
    """``builtin: digit_canvas``, a Cityscapes folder, a parquet directory or a hub id; splits and
    columns checked (one-line :class:`DataError`)."""
    label_map = None
    image_col, mask_col = spec.image_column, spec.mask_column
    if spec.builtin == "digit_canvas":
        ds, image_col, mask_col, origin = digit_canvas_dataset(), "image", "mask", "builtin digit_canvas"
    elif spec.path is not None:
        path, origin = Path(spec.path).expanduser(), spec.path
        if (path / "leftImg8bit").is_dir():
            ds = datasets.DatasetDict({split: cityscapes_dataset(path, split)
                                       for split in (spec.train_split, spec.valid_split)})
            image_col, mask_col, label_map = "image", "mask", CITYSCAPES_TRAIN_IDS
        else:
            ds = load_path(path, spec.train_split, spec.valid_split, spec.image_column, spec.label_column,
                           f"{source}.path")[0]
    else:
        ds, origin = load_hub(spec, source), spec.hub_id
    check_splits(ds, spec, (image_col, mask_col), origin)
    return SegmentationSplits(ds[spec.train_split], ds[spec.valid_split], image_col, mask_col, label_map)


def make_segmentation_dataloaders(recipe: Recipe, device: torch.device | str | None = None,
                                  splits: SegmentationSplits | None = None) -> DataLoaders:
    """Training (shuffled, jointly augmented to ``data.image_size`` crops) and validation (whole
    images) loaders. Every image is decoded once into memory (``data.resize``: shorter side);
    ``train.limit_train`` keeps the same fixed subset as for classification."""
    d, t, a = recipe.data, recipe.train, recipe.augment
    splits = splits or load_segmentation_splits(d)
    train_ds = splits.train
    if t.limit_train is not None and t.limit_train < len(train_ds):
        train_ds = train_ds.select(subset_indices(len(train_ds), t.limit_train).tolist())
    tx, tm = decode_segmentation(train_ds, splits.image_column, splits.mask_column, d.channels, d.resize,
                                 splits.label_map, "training split")
    vx, vm = decode_segmentation(splits.valid, splits.image_column, splits.mask_column, d.channels, d.resize,
                                 splits.label_map, "validation split")
    train_tfm = SegmentationTransform(d.mean, d.std, train=True, crop=d.image_size, scale=a.zoom, flip=a.flip,
                                      ignore_index=d.ignore_index, seed=t.seed)
    valid_tfm = SegmentationTransform(d.mean, d.std, train=False)
    train = TensorImageDL(tx, tm, bs=t.batch_size, shuffle=True, drop_last=len(tm) > t.batch_size,
                          after_batch=train_tfm, device=device)
    valid = TensorImageDL(vx, vm, bs=t.batch_size * 2, after_batch=valid_tfm, device=device)
    train.rng.seed(t.seed)
    return DataLoaders(train, valid, device=device)
