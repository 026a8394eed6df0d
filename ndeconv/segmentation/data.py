"""Image + mask data for segmentation: the embedded digits-on-canvas set, the Cityscapes folder
layout, and parquet directories with image and mask columns, all as ``datasets`` splits; decoded
once into uint8 image and mask tensors for the loaders."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import torch

from ..data.sources import digits_dataset
from ..errors import DataError

__all__ = ["digit_canvas_dataset", "cityscapes_dataset", "CITYSCAPES_TRAIN_IDS", "decode_segmentation"]

#: Cityscapes label id -> train id for the 19 evaluated classes (road ... bicycle); every other id is 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def digit_canvas_dataset(canvas: int = 32, digits_per_canvas: int = 2, n_train: int = 1200, n_valid: int = 300,
                         seed: int = 0) -> datasets.DatasetDict:
    """Real handwritten digits (scikit-learn's, upscaled to 16x16) pasted at random places on
    ``canvas``-pixel black canvases; the mask labels every pixel with its digit's class + 1
    (pixels brighter than a quarter of full scale) or 0 (background). Training canvases use the
    digits' training split, validation canvases the test split. No network needed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    source = digits_dataset()
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})

    def split(ds: datasets.Dataset, n: int) -> datasets.Dataset:
        glyphs = np.stack([np.asarray(im.resize((16, 16), Image.BILINEAR)) for im in ds["image"]])
        labels = np.asarray(ds["label"])
        images, masks = [], []
        for _ in range(n):
            image = np.zeros((canvas, canvas), np.uint8)
            mask = np.zeros((canvas, canvas), np.uint8)
            for k in rng.choice(len(glyphs), digits_per_canvas, replace=False):
                top, left = rng.integers(0, canvas - 16 + 1, size=2)
                window = (slice(top, top + 16), slice(left, left + 16))
                ink = glyphs[k] > 64
                image[window] = np.maximum(image[window], glyphs[k])
                mask[window][ink] = labels[k] + 1
            images.append(Image.fromarray(image, mode="L"))
            masks.append(Image.fromarray(mask, mode="L"))
        return datasets.Dataset.from_dict({"image": images, "mask": masks}, features=features)

    return datasets.DatasetDict(train=split(source["train"], n_train), test=split(source["test"], n_valid))


def cityscapes_dataset(root: str | Path, split: str) -> datasets.Dataset:
    """The Cityscapes folder layout: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``; masks carry label ids (mapped to the 19
    train ids when decoded, see :data:`CITYSCAPES_TRAIN_IDS`)."""
    root = Path(root)
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"data.path: {root} has no leftImg8bit/{split}/<city>/*_leftImg8bit.png images")
    masks = []
    for image in images:
        name = image.name[: -len("_leftImg8bit.png")]
        mask = root / "gtFine" / split / image.parent.name / f"{name}_gtFine_labelIds.png"
        if not mask.is_file():
            raise DataError(f"data.path: {image.relative_to(root)} has no mask {mask.relative_to(root)}")
        masks.append(str(mask))
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    return datasets.Dataset.from_dict({"image": [str(p) for p in images], "mask": masks}, features=features)


def _label_lut(label_map: dict[int, int] | None) -> np.ndarray | None:
    if label_map is None:
        return None
    lut = np.full(256, 255, np.uint8)
    for source, target in label_map.items():
        lut[source] = target
    return lut


def decode_segmentation(ds: datasets.Dataset, image_column: str, mask_column: str, channels: int,
                        shorter_side: int | None, label_map: dict[int, int] | None,
                        where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images ``(N, C, H, W)`` and masks ``(N, H, W)`` as uint8 tensors, resized so the shorter
    side is ``shorter_side`` (images bilinear, masks nearest) when given; masks go through
    ``label_map`` (unlisted ids: 255)."""
    from PIL import Image

    lut = _label_lut(label_map)
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"data.channels: segmentation supports 1 or 3 channels, got {channels}")
    images, masks = [], []
    for i, row in enumerate(ds):
        image, mask = row[image_column], row[mask_column]
        if shorter_side is not None:
            scale = shorter_side / min(image.size)
            size = (round(image.size[0] * scale), round(image.size[1] * scale))
            image, mask = image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        if image.size != mask.size:
            raise DataError(f"{where}: example {i} has a {image.size} image but a {mask.size} mask")
        m = np.asarray(mask)
        if m.ndim != 2:
            raise DataError(f"{where}: example {i}'s mask is not single-channel (shape {m.shape})")
        images.append(np.asarray(image.convert(mode)).reshape(image.size[1], image.size[0], channels))
        masks.append(lut[m] if lut is not None else m.astype(np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{where}: images differ in size ({sorted(shapes)[:3]}...); set data.resize")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks))
