"""Deconvolution layers: small modules holding parameters and running estimates."""

from .channel_deconv import ChannelDeconv
from .delinear import Delinear
from .fast_deconv import FastDeconv
from .fast_deconv1d import FastDeconv1d
from .fast_deconv_same import FastDeconvSame

__all__ = ["FastDeconv", "FastDeconvSame", "FastDeconv1d", "ChannelDeconv", "Delinear"]
