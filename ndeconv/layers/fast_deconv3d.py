"""``FastDeconv3d``: a ``Conv3d`` that whitens the patches it sees (video, volumes)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as DF
from ._conv import ConvDeconvMixin
from ._whitening import WhiteningState


class FastDeconv3d(ConvDeconvMixin, WhiteningState, nn.Conv3d):
    """Network deconvolution for ``Conv3d``: the patches its weight multiplies are the
    ``block * kd*kh*kw`` values of a (dilated) ``kd x kh x kw`` window across a block of
    channels, sampled at every ``sampling_stride``-th output position along each axis
    (:func:`ndeconv.functional.conv3d_patch_samples`); they are whitened as ``FastDeconv``
    whitens 2-d patches and the whitening is folded into the weight. Same ``weight``/``bias`` as
    ``nn.Conv3d``; ``fused()`` gives the plain ``nn.Conv3d``.
    """

    plain = nn.Conv3d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] | str = 0,
        dilation: int | tuple[int, int, int] = 1,
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
        return DF.conv3d_patch_samples(x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride,
                                       padding=padding, dilation=self.dilation, sampling_stride=self.sampling_stride)
