"""ndeconv: network deconvolution (Ye et al., ICLR 2020) for timm, fastai and Accelerate.

The public API. Imports the math, the layers, the conversion and the models; ``load`` and
``push`` on first use; never the training stack (see docs/layout.md).
"""

from . import functional, models
from .convert import ConversionReport, UnsupportedLayerError, convert_norm, deconvolve, stem_settings
from .distributed import sync_deconv_stats
from .errors import NdeconvError
from .freeze import freeze
from .fuse import fuse
from .init import reset_parameters
from .layers import (ChannelAffine, ChannelDeconv, Delinear, FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvSame,
                     FastDeconvTranspose2d, PatchWhitening)
from .rules import PRESETS, ConversionContext, DeconvConfig, NormFreeAct, get_rule, list_rules, register_rule
from .version import __version__


def __getattr__(name: str):
    """``load`` and ``push`` (:mod:`ndeconv.hub`: the run loader, safetensors, the hub client) are
    imported when first used; neither needs fastai or Accelerate."""
    if name in ("load", "push"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'ndeconv' has no attribute {name!r}")


__all__ = [
    "functional",
    "models",
    "FastDeconv",
    "FastDeconvSame",
    "FastDeconv1d",
    "FastDeconv3d",
    "FastDeconvTranspose2d",
    "ChannelDeconv",
    "Delinear",
    "PatchWhitening",
    "ChannelAffine",
    "deconvolve",
    "convert_norm",
    "reset_parameters",
    "stem_settings",
    "sync_deconv_stats",
    "fuse",
    "freeze",
    "load",
    "push",
    "ConversionReport",
    "UnsupportedLayerError",
    "NdeconvError",
    "register_rule",
    "get_rule",
    "list_rules",
    "ConversionContext",
    "DeconvConfig",
    "PRESETS",
    "NormFreeAct",
    "__version__",
]
