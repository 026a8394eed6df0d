"""Decode a split's images to uint8 tensors of one size, once, and keep them in an on-disk cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..outputs import atomic_write

__all__ = ["decode_image", "decode_images", "decode_split", "cache_dir", "cached_split", "DecodedImages"]

_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where decoded tensors live: ``$NDECONV_CACHE``, else ``~/.cache/ndeconv``."""
    return Path(os.environ.get("NDECONV_CACHE", Path.home() / ".cache" / "ndeconv"))


def _to_pil(value: object) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise TypeError(f"pixel arrays must be uint8, got {array.dtype}")
    return Image.fromarray(array)


def decode_image(value: object, channels: int, size: int) -> np.ndarray:
    """One image (PIL, ``{"bytes"|"path"}`` or uint8 array) as a (channels, size, size) uint8 array.

    Images of another size are resized so the shorter side is ``size`` and centre-cropped.
    """
    image = _to_pil(value).convert("L" if channels == 1 else "RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy shares it
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _undecoded(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """The split with its image column as raw bytes (decoding ourselves is faster than PIL objects)."""
    if isinstance(ds.features.get(column), datasets.Image):
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


def _labels(ds: datasets.Dataset, column: str, num_classes: int, where: str) -> torch.Tensor:
    values = list(ds[column])
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{where}: column '{column}' must hold integer class labels")
    labels = torch.tensor(values, dtype=torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels span {int(labels.min())}..{int(labels.max())}, "
                        f"outside 0..{num_classes - 1} (data.num_classes is {num_classes})")
    return labels


def decode_split(ds: datasets.Dataset, image_column: str, label_column: str, channels: int, size: int,
                 num_classes: int, where: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as one (N, C, size, size) uint8 tensor, and their int64 labels."""
    labels = _labels(ds, label_column, num_classes, where)
    return decode_images(ds, image_column, channels, size, where), labels


def decode_images(ds: datasets.Dataset, image_column: str, channels: int, size: int,
                  where: str = "data") -> torch.Tensor:
    """All images of a split as one (N, C, size, size) uint8 tensor; an undecodable one is a
    :class:`DataError` naming the split, the row and the column."""
    images = np.empty((len(ds), channels, size, size), dtype=np.uint8)
    raw = _undecoded(ds, image_column).select_columns([image_column])
    i = 0
    for batch in raw.iter(batch_size=1024):
        for value in batch[image_column]:
            try:
                images[i] = decode_image(value, channels, size)
            except Exception as e:  # PIL raises many types for corrupt data
                raise DataError(f"{where}: image {i} of column '{image_column}' cannot be decoded ({e})") from None
            i += 1
    return torch.from_numpy(images)


def cached_split(ds: datasets.Dataset, key: str, image_column: str, label_column: str, channels: int, size: int,
                 num_classes: int, where: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode_split`, read from / written to the on-disk cache under a key for the source."""
    file = cache_dir() / f"v{_CACHE_VERSION}-{key}-{channels}x{size}-{len(ds)}.pt"
    if file.exists():
        try:
            data = torch.load(file, weights_only=True)
            return data["images"], data["labels"]
        except Exception:  # a cache file from elsewhere or damaged: rebuild it
            file.unlink(missing_ok=True)
    images, labels = decode_split(ds, image_column, label_column, channels, size, num_classes, where)
    atomic_write(file, lambda tmp: torch.save({"images": images, "labels": labels}, tmp))
    return images, labels


class DecodedImages(torch.utils.data.Dataset):
    """A split decoded image by image (for data too large to cache): items are (uint8 CHW, label)."""

    def __init__(self, ds: datasets.Dataset, image_column: str, label_column: str, channels: int, size: int,
                 num_classes: int, where: str = "data"):
        self.labels = _labels(ds, label_column, num_classes, where)
        self.ds = _undecoded(ds, image_column).select_columns([image_column])
        self.column, self.channels, self.size, self.where = image_column, channels, size, where

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            image = decode_image(self.ds[int(i)][self.column], self.channels, self.size)
        except Exception as e:  # PIL raises many types for corrupt data
            raise DataError(f"{self.where}: image {int(i)} of column '{self.column}' cannot be decoded "
                            f"({str(e)[:200]})") from None
        return torch.from_numpy(image), self.labels[i]
