"""``FastDeconvSame``: ``FastDeconv`` with TensorFlow's dynamic "SAME" padding (timm's ``Conv2dSame``,
used by the ``tf_*`` ports)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as DF
from .fast_deconv import FastDeconv


class FastDeconvSame(FastDeconv):
    """Pads each input as TensorFlow's "SAME" does for its size (the odd pixel after, any stride),
    then whitens the patches of the padded input, whose zeros are part of what the weight
    multiplies, exactly as in ``FastDeconv`` with explicit padding."""

    def _deconv_forward(self, x: Tensor) -> Tensor:
        pad = DF.same_padding(x.shape[-2:], self.kernel_size, self.stride, self.dilation)
        return super()._deconv_forward(F.pad(x, pad))

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """timm's ``Conv2dSame`` with this layer's eval function (running estimates folded in)."""
        from timm.layers import Conv2dSame

        conv = self._fused_conv()
        same = Conv2dSame(self.in_channels, self.out_channels, self.kernel_size, self.stride, 0, self.dilation,
                          self.groups, True).to(device=conv.weight.device, dtype=conv.weight.dtype)
        same.load_state_dict(conv.state_dict())
        return self._with_input_norm(same.train(self.training))
