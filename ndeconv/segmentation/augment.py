"""Joint augmentation of images and their masks on the batch's device: one sampling grid per
image serves both (bilinear for the image, nearest for the mask), so they stay aligned."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.augment import normalize

__all__ = ["scale_crop_flip", "SegmentationTransform"]


def scale_crop_flip(images: Tensor, masks: Tensor, size: Sequence[int], scale: Sequence[float] = (1.0, 1.0),
                    flip: bool = False, ignore_index: int = 255,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per image: resize by a random factor in ``scale``, cut a random ``size`` window (where the
    scaled image is smaller, the window overhangs: image 0, mask ``ignore_index``), and mirror
    left-right with probability 1/2 if ``flip``. ``images`` ``(N, C, H, W)``, ``masks`` ``(N, H, W)``
    integer; returns float images and long masks of ``size``."""
    n, _, height, width = images.shape
    out_h, out_w = size
    factor = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    span_h, span_w = factor * height, factor * width  # the scaled image, in output pixels
    cy, cx = _window_centre(span_h, out_h, generator), _window_centre(span_w, out_w, generator)
    mirror = torch.ones(n)
    if flip:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = mirror * out_w / span_w
    theta[:, 0, 2] = 2 * cx / span_w - 1
    theta[:, 1, 1] = out_h / span_h
    theta[:, 1, 2] = 2 * cy / span_h - 1
    dtype = images.dtype if images.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(images.device, dtype), [n, 1, out_h, out_w], align_corners=False)
    x = F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shifted = (masks.to(dtype) + 1).unsqueeze(1)  # 0 marks "outside the image"
    m = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False).squeeze(1).long()
    return x, torch.where(m == 0, ignore_index, m - 1)


def _window_centre(span: Tensor, out: int, generator: torch.Generator | None) -> Tensor:
    """A random window centre along one axis, in scaled pixels: anywhere that keeps the window of
    ``out`` inside ``span``, or where ``span < out``, anywhere that keeps the image inside the window.
    """
    a, b = torch.full_like(span, out / 2), span - out / 2
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    centre = lo + (hi - lo) * torch.rand(span.shape, generator=generator)
    return (centre - out / 2).round() + out / 2  # whole-pixel offsets: at scale 1 no resampling blur


class SegmentationTransform:
    """What a segmentation loader does to each ``(images, masks)`` batch on the device: in training
    :func:`scale_crop_flip` to ``crop`` pixels, then normalisation; in validation normalisation only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], train: bool, crop: int | None = None,
                 scale: Sequence[float] = (1.0, 1.0), flip: bool = False, ignore_index: int = 255, seed: int = 0):
        self.train, self.crop, self.scale, self.flip, self.ignore_index = train, crop, tuple(scale), flip, ignore_index
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, masks = batch
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        if self.train:
            size = (self.crop, self.crop) if self.crop else tuple(images.shape[-2:])
            images, masks = scale_crop_flip(images, masks, size, self.scale, self.flip, self.ignore_index,
                                            self.generator)
        return normalize(images, self.mean, self.std), masks.long()
