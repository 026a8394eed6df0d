"""``FastDeconv1d``: a ``Conv1d`` that whitens the patches it sees (signals, audio, sequences)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as DF
from ._conv import ConvDeconvMixin
from ._whitening import WhiteningState


class FastDeconv1d(ConvDeconvMixin, WhiteningState, nn.Conv1d):
    """Network deconvolution for ``Conv1d``: the patches its weight multiplies are the ``block * k``
    values of a window of ``k`` positions (dilated) across a block of channels; they are whitened
    exactly as a ``FastDeconv`` with a ``1 x k`` kernel whitens the same signal seen as a
    ``1 x L`` image, and the whitening is folded into the weight. Same ``weight``/``bias`` as
    ``nn.Conv1d``; ``fused()`` gives the plain ``nn.Conv1d``.
    """

    plain = nn.Conv1d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] | str = 0,
        dilation: int | tuple[int] = 1,
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
        return DF.conv_patch_samples(
            x.unsqueeze(2), (1, self.kernel_size[0]), block=self.block, groups=self.groups, stride=(1, self.stride[0]),
            padding=(0, padding[0]), dilation=(1, self.dilation[0]), sampling_stride=self.sampling_stride,
        )

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = DF.fold_conv(self.weight.unsqueeze(2), self.bias, mean, deconv, self.groups)
        return weight.squeeze(2), bias
