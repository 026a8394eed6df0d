"""Per-batch image augmentation and normalisation on uint8 tensors, on the batch's device.

Pure functions (seeded by a ``torch.Generator``) plus :class:`BatchTransform`, the callable that
the data loaders run after moving a batch to the device. Images travel as uint8 and become float
only here, so data loading stays cheap and the model is never starved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop", "random_flip", "random_resized_crop", "center_crop", "normalize", "BatchTransform"]


def _randint(high: int, n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None, mode: str = "zeros") -> Tensor:
    """Pad by ``padding`` on each side (zeros, or ``mode="reflect"``: the image mirrored at its edges),
    then cut each image's own random window of the old size: a random translation."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), mode="constant" if mode == "zeros" else mode)
    dy = _randint(2 * padding + 1, n, generator).to(x.device)
    dx = _randint(2 * padding + 1, n, generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_resized_crop(
    x: Tensor, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per image, a random box (area fraction in ``scale``, aspect in ``ratio``) resized to ``size``.

    Boxes that would leave the image are shrunk to fit, so every output pixel is image content.
    ``x`` must be float; bilinear sampling via one ``grid_sample`` for the whole batch.
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_r.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, cx, height, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` window (images smaller than ``size`` are resized up first)."""
    h, w = x.shape[-2:]
    if min(h, w) < size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (0..255) or float (0..1 scale after ``/255``) images to ``(x/255 - mean) / std``."""
    return (x.float() / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class BatchTransform:
    """What a data loader does to each ``(images, labels)`` batch after moving it to the device.

    Training: crop with padding, flip at random, or random resized crop, as the recipe says
    (the alternating flip is the loader's: :class:`~ndeconv.data.loaders.ShardedDL`); then
    normalise. Validation: centre crop to ``size`` and normalise. The generator is seeded, so a
    run's augmentation is reproducible.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], train: bool, crop_padding: int = 0,
                 flip: bool = False, random_resized_crop: bool = False, scale: Sequence[float] = (0.08, 1.0),
                 seed: int = 0, padding_mode: str = "zeros"):
        self.size, self.train = size, train
        self.crop_padding, self.flip, self.rrc, self.scale = crop_padding, flip, random_resized_crop, tuple(scale)
        self.padding_mode = padding_mode
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(seed)

    def to(self, device: torch.device | str) -> BatchTransform:
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if self.mean.device != images.device:
            self.to(images.device)
        if self.train and self.rrc:
            x = random_resized_crop(images.float(), self.size, self.scale, generator=self.generator)
        else:
            x = center_crop(images, self.size)
        if self.train:
            x = random_crop(x, self.crop_padding, self.generator, self.padding_mode)
            if self.flip:
                x = random_flip(x, self.generator)
        return normalize(x, self.mean, self.std), labels
