"""``ChannelDeconv``: whitens the channel vector, e.g. of the features before a classifier."""

from __future__ import annotations

from typing import Unpack

import torch
from torch import Tensor, nn

from .. import functional as DF
from ..recipe.deconv import check_setting
from ._whitening import WhiteningSettings, WhiteningLayer, float32_math, math_dtype


class ChannelDeconv(WhiteningLayer, nn.Module):
    """Whiten channels in contiguous blocks of ``block`` (one covariance per block).

    Input ``(N, C)`` or ``(N, C, H, W)`` (statistics from every ``sampling_stride``-th pixel).
    The ``C mod block`` leftover channels get plain standardisation. No parameters; running
    estimates for eval, like BatchNorm without the affine part. ``input_dims`` (a buffer, so it
    travels with the state dict) records the rank of the input it trained on, which decides what
    :meth:`fused` becomes.
    """

    running_mean_rest: Tensor
    running_var_rest: Tensor
    input_dims: Tensor

    def __init__(self, num_features: int, *, device: torch.device | str | None = None,
                 **settings: Unpack[WhiteningSettings]) -> None:
        """The channel count, then the whitening's settings as keywords (``block`` default 512,
        ``sampling_stride`` 3)."""
        super().__init__()
        block, sampling_stride = settings.pop("block", 512), settings.pop("sampling_stride", 3)
        check_setting("block", block), check_setting("sampling_stride", sampling_stride)
        self.num_features = num_features
        self.block = min(block, num_features)
        self.num_blocks = num_features // self.block
        self.sampling_stride = int(sampling_stride)
        rest = num_features - self.num_blocks * self.block
        self._init_whitening(self.num_blocks, self.block, device, None, **settings)
        self.register_buffer("running_mean_rest", torch.zeros(rest, device=device))
        self.register_buffer("running_var_rest", torch.ones(rest, device=device))
        self.register_buffer("input_dims", torch.tensor(0, dtype=torch.long, device=device))  # 0: not trained yet

    def _samples(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x[:, :, :: self.sampling_stride, :: self.sampling_stride]
        return x.movedim(1, -1).reshape(-1, self.num_features).to(math_dtype(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"ChannelDeconv expects (N, {self.num_features}[, H, W]) input, got {tuple(x.shape)}")
        if self.training:
            self.input_dims.fill_(x.dim())
        width = self.num_blocks * self.block
        dtype = math_dtype(x.dtype)
        use_batch = self.estimator.take_step()  # decided once for both parts: it counts the step
        with float32_math(x.device):
            samples = self._samples(x) if use_batch else None
            mean, deconv = self.estimator(
                lambda: samples[:, :width].reshape(-1, self.num_blocks, self.block).transpose(0, 1), x.dtype,
                use_batch,
            )
            channels_last = x.movedim(1, -1).to(dtype)
            whitened = torch.einsum(
                "...gb,gbc->...gc",
                channels_last[..., :width].unflatten(-1, (self.num_blocks, self.block)) - mean,
                deconv,
            ).flatten(-2)
            rest = channels_last[..., width:]
            if rest.shape[-1]:
                rest_mean, rest_var = self._rest_mean_var(None if samples is None else samples[:, width:], dtype)
                rest = (rest - rest_mean) * torch.rsqrt(rest_var + self.eps)
            out = torch.cat([whitened, rest], dim=-1)
        return out.movedim(-1, 1).to(x.dtype)

    def _rest_mean_var(self, samples: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Per-channel mean and variance of the leftover channels: of ``samples``, else running."""
        if samples is None:
            return self.running_mean_rest.to(dtype), self.running_var_rest.to(dtype)
        with self.estimator.stats_grad_mode():
            if self.estimator.syncing():
                mean, var = DF.sync_whitening_stats(samples.t().unsqueeze(-1), 0.0, self.process_group)
                mean, var = mean.squeeze(-1), var.flatten()
            else:
                var, mean = torch.var_mean(samples, dim=0, correction=0)
        with torch.no_grad():
            self.running_mean_rest.lerp_(mean.to(self.running_mean_rest.dtype), self.update_momentum)
            self.running_var_rest.lerp_(var.to(self.running_var_rest.dtype), self.update_momentum)
        return mean, var

    @torch.no_grad()
    def fused(self, spatial: bool | None = None) -> nn.Module:
        """The affine map of this layer's eval function as a 1x1 ``nn.Conv2d`` (``spatial``) or ``nn.Linear``;
        by default ``nn.Linear`` if it trained on ``(N, C)`` input (``input_dims``), else the conv.

        Whitened channels get ``D`` blockwise, leftover channels ``1/sqrt(var + eps)``; the bias is
        ``-A mu``.
        """
        if spatial is None:
            spatial = int(self.input_dims) != 2
        c, width = self.num_features, self.num_blocks * self.block
        matrix = torch.zeros(c, c, dtype=math_dtype(self.running_deconv.dtype), device=self.running_deconv.device)
        for g in range(self.num_blocks):
            sl = slice(g * self.block, (g + 1) * self.block)
            matrix[sl, sl] = self.running_deconv[g].t()
        rest = torch.rsqrt(self.running_var_rest.to(matrix.dtype) + self.eps)
        matrix[width:, width:] = torch.diag(rest)
        mean = torch.cat([self.running_mean.flatten().to(matrix.dtype), self.running_mean_rest.to(matrix.dtype)])
        bias = -(matrix @ mean)
        layer = nn.Conv2d(c, c, 1) if spatial else nn.Linear(c, c)
        layer = layer.to(matrix.device)
        layer.weight.copy_(matrix.view_as(layer.weight))
        layer.bias.copy_(bias)
        return layer.train(self.training)

    def extra_repr(self) -> str:
        return f"{self.num_features}, block={self.block}{self._whitening_extra_repr()}"
