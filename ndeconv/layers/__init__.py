"""Deconvolution layers: small modules holding parameters and running estimates."""

from .channel_deconv import ChannelDeconv
from .delinear import Delinear
from .fast_deconv import FastDeconv

__all__ = ["FastDeconv", "ChannelDeconv", "Delinear"]
