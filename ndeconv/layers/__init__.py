"""Deconvolution layers: small modules holding parameters and running estimates."""

from .channel_affine import ChannelAffine
from .channel_deconv import ChannelDeconv
from .delinear import Delinear
from .fast_deconv import FastDeconv
from .fast_deconv1d import FastDeconv1d
from .fast_deconv3d import FastDeconv3d
from .fast_deconv_same import FastDeconvSame
from .fast_deconv_transpose import FastDeconvTranspose2d
from .patch_whitening import PatchWhitening

__all__ = ["FastDeconv", "FastDeconvSame", "FastDeconv1d", "FastDeconv3d", "FastDeconvTranspose2d", "ChannelDeconv",
           "Delinear", "PatchWhitening", "ChannelAffine"]
