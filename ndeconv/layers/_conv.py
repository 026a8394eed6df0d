"""What every convolution deconvolution layer shares: construction from a plain conv and its repr."""

from __future__ import annotations

import torch
from torch import nn

#: ``padding_mode`` of a conv to the ``F.pad`` mode that reproduces it.
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class ConvDeconvMixin:
    """Mixin for ``FastDeconv``-style layers that subclass a ``torch.nn`` conv of the same arguments."""

    block: int
    sampling_stride: int

    @classmethod
    def from_conv(cls, conv: nn.modules.conv._ConvNd, bias: bool | None = None, **deconv_kwargs):
        """A layer with ``conv``'s geometry and weights (bias added as zeros if asked)."""
        with_bias = conv.bias is not None if bias is None else bias
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, with_bias, padding_mode=conv.padding_mode, device=conv.weight.device,
            dtype=conv.weight.dtype, **deconv_kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if layer.bias is not None:
                layer.bias.copy_(conv.bias if conv.bias is not None else torch.zeros_like(layer.bias))
        layer.train(conv.training)
        return layer

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, block={self.block}, sampling_stride={self.sampling_stride}, "
            f"{self._whitening_extra_repr()}"
        )
