"""ndeconv: network deconvolution (Ye et al., ICLR 2020) for timm, fastai and Accelerate."""

from . import functional, models
from .convert import ConversionReport, UnsupportedLayerError, deconvolve, stem_settings
from .distributed import sync_deconv_stats
from .fuse import fuse
from .init import reset_parameters
from .layers import ChannelDeconv, Delinear, FastDeconv
from .rules import ConversionContext, DeconvConfig, NormFreeAct, get_rule, list_rules, register_rule

__version__ = "0.1.0"

__all__ = [
    "functional",
    "models",
    "FastDeconv",
    "ChannelDeconv",
    "Delinear",
    "deconvolve",
    "reset_parameters",
    "stem_settings",
    "sync_deconv_stats",
    "fuse",
    "ConversionReport",
    "UnsupportedLayerError",
    "register_rule",
    "get_rule",
    "list_rules",
    "ConversionContext",
    "DeconvConfig",
    "NormFreeAct",
    "__version__",
]
