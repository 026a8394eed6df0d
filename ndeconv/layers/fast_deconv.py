"""``FastDeconv``: a ``Conv2d`` that whitens the patches it sees (the paper's conv layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from ._conv import PAD_MODES, ConvDeconvMixin
from ._whitening import WhiteningState, float32_math


class FastDeconv(ConvDeconvMixin, WhiteningState, nn.Conv2d):
    """Network deconvolution conv layer: ``conv2d(Cov^(-1/2) (patches - mu), W)``, implicitly.

    Same ``weight``/``bias`` and geometry as ``nn.Conv2d`` (a conv's state loads into it). In
    training the patch statistics of the batch (every ``sampling_stride``-th position, channels
    in groups of ``block``) give ``mu`` and ``D = Cov^(-1/2)`` (Newton-Schulz, ``n_iter`` steps),
    folded into the weight; gradients flow through both. In eval the running estimates are
    used and the folded weight is cached, so it costs one plain convolution. Grouped and
    depthwise convs whiten each conv group separately with ``block = in_channels / groups``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        block: int = 64,
        sampling_stride: int = 3,
        eps: float = 1e-5,
        n_iter: int = 5,
        momentum: float = 0.1,
        freeze_iter: int | None = None,
        stats_grad: bool = True,
        max_samples: int | None = None,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device=device, dtype=dtype,
        )
        if sampling_stride < 1:
            raise ValueError(f"sampling_stride must be a positive integer, got {sampling_stride}")
        per_group = in_channels // groups
        self.block = per_group if groups > 1 else DF.resolve_block(block, in_channels)
        self.sampling_stride = int(sampling_stride)
        kh, kw = self.kernel_size
        self._init_whitening(
            groups, self.block * kh * kw, eps, n_iter, momentum, freeze_iter, device, dtype, stats_grad, max_samples
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FastDeconv expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        padding = self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=PAD_MODES[self.padding_mode])
            padding = (0, 0)
        with float32_math(x.device):
            mean, deconv = self._estimate(
                lambda: DF.conv_patch_samples(
                    x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride,
                    padding=padding, dilation=self.dilation, sampling_stride=self.sampling_stride,
                ),
                x.dtype,
            )
            weight, bias = self._fold_cached(
                lambda: DF.fold_conv(self.weight, self.bias, mean, deconv, self.groups),
                (self.weight, self.bias, self.running_mean, self.running_deconv),
            )
        return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), self.stride, padding, self.dilation, self.groups)

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` that computes this layer's eval function (running estimates folded in)."""
        weight, bias = DF.fold_conv(self.weight, self.bias, self.running_mean, self.running_deconv, self.groups)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, True, self.padding_mode, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv.train(self.training)
