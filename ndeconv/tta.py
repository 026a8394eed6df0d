"""Test-time augmentation: a classifier's logits averaged over mirrored and translated views."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["mirror_translate_logits", "TTA"]


def _mirror_mean(model: Callable[[Tensor], Tensor], x: Tensor, logits: Tensor | None = None) -> Tensor:
    """The mean logits of ``x`` and of its left-right mirror (``logits``: those of ``x``, if known)."""
    return 0.5 * ((model(x) if logits is None else logits) + model(x.flip(-1)))


def mirror_translate_logits(model: Callable[[Tensor], Tensor], x: Tensor, logits: Tensor | None = None) -> Tensor:
    """The logits of the CIFAR-10 speed-record evaluation: the mean of the image's and its mirror's,
    averaged half and half with the same mean over the image translated by one pixel up-left and
    by one down-right (reflect padding). Six forwards of ``model`` (five if ``logits``, the
    image's own, are given)."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
    translated = torch.stack([_mirror_mean(model, view) for view in shifted]).mean(0)
    return 0.5 * _mirror_mean(model, x, logits) + 0.5 * translated


class TTA(nn.Module):
    """``model`` evaluated with :func:`mirror_translate_logits` in eval mode (as it is in training)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) if self.training else mirror_translate_logits(self.model, x)
