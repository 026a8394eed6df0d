"""``FastDeconv3d``: a ``Conv3d`` that whitens the patches it sees (video, volumes)."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as DF
from ._conv import DirectConvDeconvMixin
from ._whitening import WhiteningLayer


class FastDeconv3d(DirectConvDeconvMixin, WhiteningLayer, nn.Conv3d):
    """Network deconvolution for ``Conv3d``: the patches its weight multiplies are the
    ``block * kd*kh*kw`` values of a (dilated) ``kd x kh x kw`` window across a block of
    channels, sampled at every ``sampling_stride``-th output position along each axis
    (:func:`ndeconv.functional.conv_patch_samples` of a 5-d input); they are whitened as ``FastDeconv``
    whitens 2-d patches and the whitening is folded into the weight. Same ``weight``/``bias`` as
    ``nn.Conv3d``; ``fused()`` gives the plain ``nn.Conv3d``.
    """

    plain = nn.Conv3d

    def _patch_samples(self, x: Tensor, padding: tuple[int, ...], sampling_stride: int) -> Tensor:
        return DF.conv_patch_samples(x, self.kernel_size, block=self.block, groups=self.groups, stride=self.stride,
                                     padding=padding, dilation=self.dilation, sampling_stride=sampling_stride)
