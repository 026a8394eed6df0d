"""The registry of conversion rules: how each module type becomes its twin under a target norm.

Rules are keyed by the target norm (``deconv``, the default; ``gn`` and ``none``, whose rules live
in :mod:`ndeconv.norms`) and by exact module type (a subclass may behave differently, so it needs
its own rule), and added with a decorator, in the style of timm's model registry::

    @ndeconv.register_rule(MyNorm)
    def _drop_my_norm(module: MyNorm, ctx: ndeconv.ConversionContext) -> nn.Module:
        return nn.Identity()

    @ndeconv.register_rule(MyNorm, norm="gn")
    def _my_norm_to_group_norm(module: MyNorm, ctx: ndeconv.ConversionContext) -> nn.Module: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from timm import layers as tl
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .layers import (ChannelDeconv, Delinear, FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvSame,
                     FastDeconvTranspose2d, PatchWhitening)
from .recipe.deconv import PRESETS, DeconvConfig

__all__ = ["ConversionContext", "DeconvConfig", "PRESETS", "TARGETS", "Rule", "register_rule", "get_rule",
           "list_rules", "NormFreeAct", "BATCH_NORMS", "BATCH_NORM_ACTS", "CONVS"]

#: The norms a model's batch norms can be converted to, each with its own rules.
TARGETS = ("deconv", "gn", "none")


@dataclass(frozen=True)
class ConversionContext:
    """What a rule knows about the module it converts."""

    path: str
    config: DeconvConfig
    is_stem: bool = False
    is_classifier: bool = False
    conv_index: int = 0  # the module's place among the model's convolutions (0: the stem)


Rule = Callable[[nn.Module, ConversionContext], nn.Module]
R = TypeVar("R", bound=Rule)
_RULES: dict[str, dict[type, Rule]] = {target: {} for target in TARGETS}


def _check_target(norm: str) -> None:
    if norm not in TARGETS:
        raise ValueError(f"norm must be one of {', '.join(TARGETS)}, got {norm!r}")


def register_rule(*module_types: type, norm: str = "deconv") -> Callable[[R], R]:
    """Register the decorated function as the rule converting ``module_types`` for the target ``norm``
    (replacing any earlier one)."""
    if not module_types:
        raise TypeError("register_rule needs at least one module type")
    _check_target(norm)

    def decorate(rule: R) -> R:
        for module_type in module_types:
            _RULES[norm][module_type] = rule
        return rule

    return decorate


def get_rule(module: nn.Module, norm: str = "deconv") -> Rule | None:
    """The rule registered for ``type(module)`` and the target ``norm``, or ``None``."""
    _check_target(norm)
    return _RULES[norm].get(type(module))


def list_rules(norm: str = "deconv") -> dict[str, str]:
    """``{module type: rule name}`` of every rule registered for the target ``norm``."""
    _check_target(norm)
    return {f"{t.__module__}.{t.__qualname__}": rule.__name__ for t, rule in _RULES[norm].items()}


class NormFreeAct(nn.Sequential):
    """What remains of a fused norm+activation layer once the norm is removed: drop, then act."""


def keep(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """A module that is already what the target wants stays as it is: a deconvolution layer
    (converting twice changes nothing), a patch-whitening stem (deconvolution's stem frozen at an
    estimate from data), a conv under GroupNorm."""
    return module


register_rule(FastDeconv, FastDeconvSame, FastDeconv1d, FastDeconv3d, FastDeconvTranspose2d, Delinear, ChannelDeconv,
              NormFreeAct, PatchWhitening)(keep)


_CONV_LAYERS = {nn.Conv2d: FastDeconv, tl.Conv2dSame: FastDeconvSame, nn.Conv1d: FastDeconv1d, nn.Conv3d: FastDeconv3d,
                nn.ConvTranspose2d: FastDeconvTranspose2d}


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose every group holds one input channel (MobileNet/EfficientNet's spatial convs)."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


@register_rule(*_CONV_LAYERS)
def conv_to_fast_deconv(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """Every conv becomes its deconvolution layer (``Conv2d``: ``FastDeconv``, timm's ``Conv2dSame``:
    ``FastDeconvSame``, ``Conv1d``: ``FastDeconv1d``, ``Conv3d``: ``FastDeconv3d``,
    ``ConvTranspose2d``: ``FastDeconvTranspose2d``) with its geometry and weights, plus a (zero)
    bias that takes over the removed norm's shift; the first conv gets the stem's
    ``n_iter``/``freeze_iter``. Depthwise convs stay plain: whitening each channel's own k x k
    neighbourhood trains MobileNet and EfficientNet far worse (docs/fidelity.md), and the 1x1
    convs around them whiten their inputs already."""
    if is_depthwise(module):
        return module
    settings = ctx.config.layer_settings(stem=ctx.is_stem)
    return _CONV_LAYERS[type(module)].from_conv(module, bias=True, **settings)


@register_rule(nn.Linear, tl.Linear)
def linear_to_delinear(module: nn.Linear, ctx: ConversionContext) -> nn.Module:
    """The classifier becomes ``Delinear`` when ``block_fc > 0``; other linears stay."""
    if not ctx.is_classifier or ctx.config.block_fc <= 0:
        return module
    return Delinear.from_linear(module, **ctx.config.classifier_settings())


#: The batch norms every target converts: plain, sync, frozen, split; and timm's fused norm+act layers.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d, tl.SplitBatchNorm2d)
BATCH_NORM_ACTS = (tl.BatchNormAct2d, tl.SyncBatchNormAct, tl.FrozenBatchNormAct2d)
#: The convolutions a model's norms follow (deconvolution replaces them; the other targets keep them).
CONVS = tuple(_CONV_LAYERS)


@register_rule(*BATCH_NORMS)
def drop_batch_norm(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """Batch norms (plain, sync, frozen, split) are removed: deconvolution replaces them (under ``none``,
    nothing does)."""
    return nn.Identity()


@register_rule(*BATCH_NORM_ACTS)
def drop_norm_keep_act(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """timm's fused norm+act layers lose the norm and keep their drop and activation."""
    return NormFreeAct(module.drop, module.act)


def needs_rule(module: nn.Module) -> bool:
    """Whether a module without a rule must not be silently kept: convolutions and norm layers.

    A container whose name says norm (timm's ``ConvNormAct``) is not one: its children are visited.
    """
    leaf = next(module.children(), None) is None
    norm_like = leaf and "norm" in type(module).__name__.lower()
    return norm_like or isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm))


