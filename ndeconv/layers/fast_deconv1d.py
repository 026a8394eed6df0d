"""``FastDeconv1d``: a ``Conv1d`` that whitens the patches it sees (signals, audio, sequences)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from ._conv import PAD_MODES, ConvDeconvMixin
from ._whitening import WhiteningState, float32_math


class FastDeconv1d(ConvDeconvMixin, WhiteningState, nn.Conv1d):
    """Network deconvolution for ``Conv1d``: the patches its weight multiplies are the ``block * k``
    values of a window of ``k`` positions (dilated) across a block of channels; they are whitened
    exactly as a ``FastDeconv`` with a ``1 x k`` kernel whitens the same signal seen as a
    ``1 x L`` image, and the whitening is folded into the weight. Same ``weight``/``bias`` as
    ``nn.Conv1d``; ``fused()`` gives the plain ``nn.Conv1d``.
    """

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
        if sampling_stride < 1:
            raise ValueError(f"sampling_stride must be a positive integer, got {sampling_stride}")
        self.block = in_channels // groups if groups > 1 else DF.resolve_block(block, in_channels)
        self.sampling_stride = int(sampling_stride)
        self._init_whitening(groups, self.block * self.kernel_size[0], eps, n_iter, momentum, freeze_iter, device,
                             dtype, stats_grad, max_samples)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"FastDeconv1d expects (N, {self.in_channels}, L) input, got {tuple(x.shape)}")
        padding = self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=PAD_MODES[self.padding_mode])
            padding = (0,)
        with float32_math(x.device):
            mean, deconv = self._estimate(
                lambda: DF.conv_patch_samples(
                    x.unsqueeze(2), (1, self.kernel_size[0]), block=self.block, groups=self.groups,
                    stride=(1, self.stride[0]), padding=(0, padding[0]), dilation=(1, self.dilation[0]),
                    sampling_stride=self.sampling_stride,
                ),
                x.dtype,
            )
            weight, bias = self._fold_cached(lambda: self._fold(mean, deconv),
                                             (self.weight, self.bias, self.running_mean, self.running_deconv))
        return F.conv1d(x, weight.to(x.dtype), bias.to(x.dtype), self.stride, padding, self.dilation, self.groups)

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = DF.fold_conv(self.weight.unsqueeze(2), self.bias, mean, deconv, self.groups)
        return weight.squeeze(2), bias

    @torch.no_grad()
    def fused(self) -> nn.Conv1d:
        """The plain ``nn.Conv1d`` that computes this layer's eval function (running estimates folded in)."""
        weight, bias = self._fold(self.running_mean, self.running_deconv)
        conv = nn.Conv1d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, True, self.padding_mode, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv.train(self.training)
