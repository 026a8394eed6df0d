"""``Delinear``: a ``Linear`` layer that whitens its input features (the paper's classifier)."""

from __future__ import annotations

from typing import Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from ..recipe.deconv import check_setting
from ._whitening import WhiteningSettings, WhiteningLayer, float32_math


class Delinear(WhiteningLayer, nn.Linear):
    """``linear(Cov^(-1/2) (x - mu), W)`` with the whitening folded into the weight.

    Input features are split into contiguous blocks of ``block`` (``gcd``-adjusted if it does
    not divide ``in_features``); all blocks share one ``block x block`` covariance, as in the
    paper's code. Same ``weight``/``bias`` as ``nn.Linear``. With ``scale="channel"`` each feature
    is standardised over the batch first (``BatchNorm1d`` without affine).
    """

    _features_last = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **settings: Unpack[WhiteningSettings]) -> None:
        """``nn.Linear``'s arguments, then the whitening's as keywords (``block`` default 512, no
        ``sampling_stride``)."""
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.block = DF.resolve_block(check_setting("block", settings.pop("block", 512)), in_features)
        self._init_whitening(1, self.block, device, dtype, channels=in_features, **settings)

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        return DF.fold_linear(self.weight, self.bias, mean, deconv)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Delinear expects (..., {self.in_features}) input, got {tuple(x.shape)}")
        x = self._standardized(x)
        with float32_math(x.device):
            mean, deconv = self.estimator(lambda: DF.linear_samples(x, self.block), x.dtype)
            weight, bias = self._fold_cached(lambda: self._fold(mean, deconv),
                                             (self.weight, self.bias, self.running_mean, self.running_deconv))
        return F.linear(x, weight.to(x.dtype), bias.to(x.dtype))

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """The plain ``nn.Linear`` that computes this layer's eval function (running estimates folded
        in); with a ``scale``, after the standardisation (``BatchNorm1d``)."""
        weight, bias = self._fold(self.running_mean, self.running_deconv)
        linear = nn.Linear(self.in_features, self.out_features, True, device=self.weight.device,
                           dtype=self.weight.dtype)
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
        return self._with_input_norm(linear.train(self.training))

    @classmethod
    def from_linear(cls, linear: nn.Linear, **deconv_kwargs) -> "Delinear":
        """A ``Delinear`` with ``linear``'s shape and weights."""
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype, **deconv_kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block={self.block}{self._whitening_extra_repr()}"
