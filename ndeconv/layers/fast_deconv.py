"""``FastDeconv``: a ``Conv2d`` that whitens the patches it sees (the paper's conv layer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as DF
from ._conv import ConvDeconvMixin
from ._whitening import WhiteningState


class FastDeconv(ConvDeconvMixin, WhiteningState, nn.Conv2d):
    """Network deconvolution conv layer: ``conv2d(Cov^(-1/2) (patches - mu), W)``, implicitly.

    Same ``weight``/``bias`` and geometry as ``nn.Conv2d`` (a conv's state loads into it). In
    training the patch statistics of the batch (every ``sampling_stride``-th position, channels
    in groups of ``block``) give ``mu`` and ``D = Cov^(-1/2)`` (Newton-Schulz, ``n_iter`` steps),
    folded into the weight; gradients flow through both. In eval the running estimates are
    used and the folded weight is cached, so it costs one plain convolution. Grouped and
    depthwise convs whiten each conv group separately with ``block = in_channels / groups``.
    ``fused()`` gives the plain ``nn.Conv2d``.
    """

    plain = nn.Conv2d

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
        self._init_deconv(block, sampling_stride, eps, n_iter, momentum, freeze_iter, stats_grad, max_samples,
                          device, dtype)

    def _patch_samples(self, x: Tensor, padding: tuple[int, ...]) -> Tensor:
        return DF.conv_patch_samples(x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride,
                                     padding=padding, dilation=self.dilation, sampling_stride=self.sampling_stride)
