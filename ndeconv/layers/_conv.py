"""What every convolution deconvolution layer shares: construction from a plain conv, the
whitened forward (padding, statistics, fold, one convolution), ``fused()`` and the repr."""

from __future__ import annotations

import math
from typing import Callable, Sequence, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from ..recipe.deconv import check_setting
from ._whitening import WhiteningSettings, float32_math

#: ``padding_mode`` of a conv to the ``F.pad`` mode that reproduces it.
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvDeconvMixin:
    """Mixin for ``FastDeconv``-style layers that subclass a ``torch.nn`` conv of the same arguments
    (and :class:`~ndeconv.layers._whitening.WhiteningLayer`).

    A subclass says which patches its weight multiplies (:meth:`_patch_samples`, ``(groups, m, f)``
    with ``f = block * prod(kernel_size)``) and which plain conv it fuses to (``plain``); the
    rest is the same for 1-, 2- and 3-d convolutions.
    """

    block: int
    sampling_stride: int
    samples_per_dim: int | None
    plain: type[nn.Module]

    def _init_deconv(self, device: torch.device | str | None, dtype: torch.dtype | None, block: int = 64,
                     sampling_stride: int = 3, small_batch: bool = True, samples_per_dim: int | None = None,
                     **whitening) -> None:
        """Blocks (a grouped conv whitens each conv group as one block), sampling and running estimates."""
        for name, value in (("block", block), ("sampling_stride", sampling_stride), ("small_batch", small_batch),
                            ("samples_per_dim", samples_per_dim)):
            check_setting(name, value)
        per_group = self.in_channels // self.groups
        self.block = per_group if self.groups > 1 else DF.resolve_block(block, self.in_channels)
        self.sampling_stride = int(sampling_stride)
        self.samples_per_dim = None if samples_per_dim is None else int(samples_per_dim)
        self._init_whitening(self.groups, self.block * math.prod(self.kernel_size), device, dtype,
                             channels=self.in_channels, small_batch=small_batch, **whitening)

    @property
    def _norm_dims(self) -> int:
        return len(self.kernel_size)

    @staticmethod
    def _geometry(conv: nn.modules.conv._ConvNd, bias: bool) -> tuple:
        """The leading positional arguments of ``conv``'s class (and of this layer's) for its geometry."""
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, bias)

    @classmethod
    def from_conv(cls, conv: nn.modules.conv._ConvNd, bias: bool | None = None, **deconv_kwargs):
        """A layer with ``conv``'s geometry and weights (bias added as zeros if asked)."""
        with_bias = conv.bias is not None if bias is None else bias
        layer = cls(*cls._geometry(conv, with_bias), padding_mode=conv.padding_mode, device=conv.weight.device,
                    dtype=conv.weight.dtype, **deconv_kwargs)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if layer.bias is not None:
                layer.bias.copy_(conv.bias if conv.bias is not None else torch.zeros_like(layer.bias))
        layer.train(conv.training)
        return layer

    def _patch_samples(self, x: Tensor, padding: tuple[int, ...], sampling_stride: int) -> Tensor:
        raise NotImplementedError

    def _statistics_samples(self, patches: Callable[[int], Tensor], n: int, positions: Sequence[int]) -> Tensor:
        """The samples the batch statistics of ``n`` inputs come from (``positions``: the output
        positions along each axis): ``patches(stride)`` at :meth:`_sampling_stride_for`'s stride,
        or with ``small_batch`` ``patches(1)`` (every position) when those are fewer than the
        covariance is wide (a small batch, a small feature map); the covariance of fewer samples
        than that is then shrunk towards its diagonal (:meth:`_estimate`)."""
        stride = self._sampling_stride_for(n, positions)
        samples = patches(stride)
        if self.small_batch and stride > 1 and samples.shape[1] < samples.shape[2]:
            return patches(1)
        return samples

    def _sampling_stride_for(self, n: int, positions: Sequence[int]) -> int:
        """``sampling_stride``, or with ``samples_per_dim`` the coarsest stride at least as large whose
        positions still give that many samples per dimension of the covariance
        (:func:`ndeconv.functional.coarsest_sampling_stride`)."""
        if self.samples_per_dim is None:
            return self.sampling_stride
        per_position = n * (self.in_channels // self.groups // self.block)
        return DF.coarsest_sampling_stride(positions, per_position, self.running_deconv.shape[-1],
                                           self.samples_per_dim, self.sampling_stride)

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        """The conv weight and bias with the whitening ``(mean, deconv)`` folded in."""
        return DF.fold_conv(self.weight, self.bias, mean, deconv, self.groups)

    def _check_input(self, x: Tensor) -> None:
        dims = len(self.kernel_size)
        if x.dim() != dims + 2 or x.shape[1] != self.in_channels:
            spatial = ", ".join("DHW"[3 - dims:]) if dims > 1 else "L"
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_channels}, {spatial}) input, "
                             f"got {tuple(x.shape)}")

    def _whitened(self, x: Tensor, patches: Callable[[], Tensor],
                  conv: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The forward every layer shares: the whitening of ``patches()`` (the batch's or the running
        one) folded into weight and bias, then the one convolution ``conv(weight, bias)``."""
        with float32_math(x.device):
            mean, deconv = self.estimator(patches, x.dtype)
            weight, bias = self._fold_cached(lambda: self._fold(mean, deconv),
                                             (self.weight, self.bias, self.running_mean, self.running_deconv))
        return conv(weight.to(x.dtype), bias.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self._deconv_forward(self._standardized(x))

    def _deconv_forward(self, x: Tensor) -> Tensor:
        """The forward of an input already standardised (``scale``)."""
        dims, padding = len(self.kernel_size), self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=PAD_MODES[self.padding_mode])
            padding = (0,) * dims

        def conv(weight: Tensor, bias: Tensor) -> Tensor:
            return _CONV_FNS[dims](x, weight, bias, self.stride, padding, self.dilation, self.groups)

        return self._whitened(x, lambda: self._batch_samples(x, padding), conv)

    def _batch_samples(self, x: Tensor, padding: tuple[int, ...]) -> Tensor:
        """:meth:`_statistics_samples` of a direct conv's input ``x`` (padded as ``padding`` says)."""
        positions = DF.conv_output_size(x.shape[2:], self.kernel_size, self.stride, padding, self.dilation)
        return self._statistics_samples(lambda s: self._patch_samples(x, padding, s), x.shape[0], positions)

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """The plain conv that computes this layer's eval function (running estimates folded in);
        with a ``scale``, after the standardisation as a ``torch.nn`` norm without affine
        (``GroupNorm(1, C)``, or ``BatchNorm`` with the running input statistics)."""
        return self._with_input_norm(self._fused_conv())

    @torch.no_grad()
    def _fused_conv(self) -> nn.Module:
        weight, bias = self._fold(*self._running_whitening())
        conv = self.plain(*self._geometry(self, True), padding_mode=self.padding_mode, device=self.weight.device,
                          dtype=self.weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, block={self.block}, sampling_stride={self.sampling_stride}"
            f"{'' if self.samples_per_dim is None else f', samples_per_dim={self.samples_per_dim}'}"
            f"{'' if self.small_batch else ', small_batch=False'}"
            f"{self._whitening_extra_repr()}"
        )


class DirectConvDeconvMixin(ConvDeconvMixin):
    """:class:`ConvDeconvMixin` for the direct ``Conv1d``/``Conv2d``/``Conv3d``, which share one argument order."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] | str = 0,
                 dilation: int | tuple[int, ...] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **settings: Unpack[WhiteningSettings]) -> None:
        """The direct conv's arguments (1-, 2- or 3-d, as the ``torch.nn`` class it subclasses), then
        the deconvolution's as keywords (:class:`~ndeconv.layers._whitening.WhiteningSettings`)."""
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device=device, dtype=dtype)
        self._init_deconv(device, dtype, **settings)
