"""``FastDeconvTranspose2d``: a ``ConvTranspose2d`` that whitens what its weight multiplies (decoders,
segmentation heads)."""

from __future__ import annotations

from typing import Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from ._conv import ConvDeconvMixin
from ._whitening import WhiteningSettings, WhiteningLayer


class FastDeconvTranspose2d(ConvDeconvMixin, WhiteningLayer, nn.ConvTranspose2d):
    """Network deconvolution for ``ConvTranspose2d``.

    Output pixel ``(u, v)`` is ``sum W[c, o, a, b] * P[c, a, b]``, with ``P[c, a, b]`` the input
    pixel ``((u + p - a*d) / s, (v + p - b*d) / s)`` of channel ``c`` where that is a whole, in-range
    index and 0 otherwise (:func:`ndeconv.functional.conv_transpose_patch_samples`). Those patches,
    with the zeros the stride puts between input pixels, are what the weight multiplies: they are
    whitened (blocks of ``block`` input channels, every ``sampling_stride``-th output position) and
    the whitening is folded into the weight and bias, so the layer still runs one transposed
    convolution. Same ``weight``/``bias`` as ``nn.ConvTranspose2d``; ``fused()`` gives the plain
    layer. Only zero padding (the only mode ``ConvTranspose2d`` has).
    """

    plain = nn.ConvTranspose2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 output_padding: int | tuple[int, int] = 0, groups: int = 1, bias: bool = True,
                 dilation: int | tuple[int, int] = 1, padding_mode: str = "zeros",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **settings: Unpack[WhiteningSettings]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device=device, dtype=dtype)
        self._init_deconv(device, dtype, **settings)

    @staticmethod
    def _geometry(conv: nn.ConvTranspose2d, bias: bool) -> tuple:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.output_padding, conv.groups, bias, conv.dilation)

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        weight = DF.transposed_as_conv_weight(self.weight, self.groups)
        weight, bias = DF.fold_conv(weight, self.bias, mean, deconv, self.groups)
        return DF.conv_as_transposed_weight(weight, self.groups), bias

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        self._check_input(x)
        x = self._standardized(x)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)

        def patches(sampling_stride: int) -> Tensor:
            return DF.conv_transpose_patch_samples(
                x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride, padding=self.padding,
                output_padding=output_padding, dilation=self.dilation, sampling_stride=sampling_stride)

        def conv(weight: Tensor, bias: Tensor) -> Tensor:
            return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, output_padding, self.groups,
                                      self.dilation)

        def samples() -> Tensor:
            positions = DF.conv_transpose_output_size(x.shape[2:], self.kernel_size, self.stride, self.padding,
                                                      output_padding, self.dilation)
            return self._statistics_samples(patches, x.shape[0], positions)

        return self._whitened(x, samples, conv)
