"""``FastDeconv``: a ``Conv2d`` that whitens the patches it sees (the paper's conv layer)."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as DF
from ._conv import DirectConvDeconvMixin
from ._whitening import WhiteningLayer


class FastDeconv(DirectConvDeconvMixin, WhiteningLayer, nn.Conv2d):
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

    def _patch_samples(self, x: Tensor, padding: tuple[int, ...], sampling_stride: int) -> Tensor:
        return DF.conv_patch_samples(x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride,
                                     padding=padding, dilation=self.dilation, sampling_stride=sampling_stride)
