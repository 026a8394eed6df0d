"""``FastDeconv1d``: a ``Conv1d`` that whitens the patches it sees (signals, audio, sequences)."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as DF
from ._conv import DirectConvDeconvMixin
from ._whitening import WhiteningLayer


class FastDeconv1d(DirectConvDeconvMixin, WhiteningLayer, nn.Conv1d):
    """Network deconvolution for ``Conv1d``: the patches its weight multiplies are the ``block * k``
    values of a window of ``k`` positions (dilated) across a block of channels; they are whitened
    exactly as a ``FastDeconv`` with a ``1 x k`` kernel whitens the same signal seen as a
    ``1 x L`` image, and the whitening is folded into the weight. Same ``weight``/``bias`` as
    ``nn.Conv1d``; ``fused()`` gives the plain ``nn.Conv1d``.
    """

    plain = nn.Conv1d

    def _patch_samples(self, x: Tensor, padding: tuple[int, ...], sampling_stride: int) -> Tensor:
        return DF.conv_patch_samples(
            x.unsqueeze(2), (1, self.kernel_size[0]), block=self.block, groups=self.groups, stride=(1, self.stride[0]),
            padding=(0, padding[0]), dilation=(1, self.dilation[0]), sampling_stride=sampling_stride,
        )

    def _fold(self, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = DF.fold_conv(self.weight.unsqueeze(2), self.bias, mean, deconv, self.groups)
        return weight.squeeze(2), bias
