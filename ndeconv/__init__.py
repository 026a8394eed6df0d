"""ndeconv: network deconvolution (Ye et al., ICLR 2020) for timm, fastai and Accelerate."""

from . import functional
from .layers import ChannelDeconv, Delinear, FastDeconv

__version__ = "0.1.0"

__all__ = ["functional", "FastDeconv", "ChannelDeconv", "Delinear", "__version__"]
