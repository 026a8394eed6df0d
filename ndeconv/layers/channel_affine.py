"""``ChannelAffine``: a fixed per-channel ``s x + t`` (what a batch norm computes in eval, frozen)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelAffine(nn.Module):
    """``x * scale + shift`` along the channel axis (the second, of ``(N, C, ...)``), with ``scale`` and
    ``shift`` buffers: no parameter, the same in training and eval. What a batch norm that follows
    no conv becomes when a trained model is converted with its function kept
    (``deconvolve(model, calibrate=...)``)."""

    scale: Tensor
    shift: Tensor

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(self.shift.to(x.dtype).view(shape), x, self.scale.to(x.dtype).view(shape))

    def extra_repr(self) -> str:
        return f"{len(self.scale)}"
