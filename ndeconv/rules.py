"""The registry of conversion rules: how each module type becomes its deconvolution twin.

Rules are keyed by exact module type (a subclass may behave differently, so it needs its own
rule) and added with a decorator, in the style of timm's model registry::

    @ndeconv.register_rule(MyNorm)
    def _drop_my_norm(module: MyNorm, ctx: ndeconv.ConversionContext) -> nn.Module:
        return nn.Identity()

Floor: above the layers; imports timm and torchvision's norm types to register their rules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Literal, TypeVar

from timm import layers as tl
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .layers import (ChannelDeconv, Delinear, FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvSame,
                     FastDeconvTranspose2d, PatchWhitening)

__all__ = ["ConversionContext", "DeconvConfig", "PRESETS", "Rule", "register_rule", "get_rule", "list_rules",
           "NormFreeAct"]

#: Named bundles of :class:`DeconvConfig` settings (``model.deconv.preset``, ``deconvolve(preset=...)``);
#: ``paper`` is the paper's layer (the defaults). Measured in ``docs/equal-time.md``.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {"block": 16, "scale": "channel", "update_every": 2},
}


@dataclass(frozen=True)
class DeconvConfig:
    """The settings of a conversion, the one place they are described (:func:`ndeconv.deconvolve`
    takes one, or builds it from keywords; a recipe's ``model.deconv`` is one).

    - ``block``: channels whitened together in a conv layer's patches (``block x k x k``
      covariances; ``gcd``-adjusted when it does not divide the channels, a whole conv group
      when grouped);
    - ``block_fc``: features whitened together in the classifier (``Delinear``); 0 keeps the
      classifier a plain ``Linear``;
    - ``sampling_stride``: statistics from every ``sampling_stride``-th output position;
    - ``n_iter``: Newton-Schulz steps for ``Cov^(-1/2)``; ``eps``: added to the covariance's diagonal;
    - ``stem_n_iter``, ``stem_freeze_iter``: the first conv's steps and the training step after
      which it keeps its running estimate (None: the architecture's own, :func:`ndeconv.stem_settings`,
      else ``n_iter`` and never);
    - ``stats_grad`` (False: the batch's mean and ``D`` are constants in backward),
      ``max_samples`` (at most that many samples, evenly spaced) and ``update_every`` (recompute
      the statistics on every k-th training step only): faster, non-default options;
    - ``whiten_depthwise``: also whiten depthwise convs (off: whitening each channel's own
      neighbourhood trains MobileNet/EfficientNet far worse);
    - ``scale``: ``none`` (the paper), ``sample`` or ``channel``: every layer invariant to the
      scale of its input on every step, also on steps that reuse ``D`` (what makes
      ``update_every > 1`` train at the paper's learning rate; :class:`~ndeconv.FastDeconv`);
    - ``whiten_every``: whiten the stem, the classifier and every n-th conv only; the other
      convs only standardise their input channels (``scale: channel`` without whitening);
    - ``warm_start``: on an update step, ``D`` from the last update's in that many Newton-Schulz
      steps instead of ``n_iter`` from the identity (0: off);
    - ``preset``: a named bundle of the settings above (:data:`PRESETS`); a setting given with it
      replaces the preset's unless it is the default value.
    """

    block: int = 64
    block_fc: int = 512
    sampling_stride: int = 3
    n_iter: int = 5
    eps: float = 1e-5
    stem_n_iter: int | None = None
    stem_freeze_iter: int | None = None
    stats_grad: bool = True
    max_samples: int | None = None
    whiten_depthwise: bool = False
    update_every: int = 1
    scale: Literal["none", "sample", "channel"] = "none"
    whiten_every: int = 1
    warm_start: int = 0
    preset: Literal["paper", "fast"] | None = None

    def __post_init__(self) -> None:
        if self.preset is None:
            return
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        defaults = {f.name: f.default for f in fields(self)}
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) == defaults[name]:
                object.__setattr__(self, name, value)

    def whitens(self, conv_index: int) -> bool:
        """Whether the ``conv_index``-th convolution (0: the stem) whitens (``whiten_every``)."""
        return conv_index % self.whiten_every == 0

    def layer_settings(self, *, stem: bool = False, whiten: bool = True) -> dict:
        """The keyword settings of a conv deconvolution layer (the stem's steps and freezing for the
        first conv; a conv that does not whiten only standardises its input channels)."""
        n_iter = self.stem_n_iter if stem and self.stem_n_iter is not None else self.n_iter
        return {"block": self.block, "sampling_stride": self.sampling_stride, "eps": self.eps, "n_iter": n_iter,
                "freeze_iter": self.stem_freeze_iter if stem else None, "stats_grad": self.stats_grad,
                "max_samples": self.max_samples, "update_every": self.update_every,
                "scale": self.scale if whiten else "channel", "whiten": whiten, "warm_start": self.warm_start}

    def classifier_settings(self) -> dict:
        """The keyword settings of the classifier's ``Delinear``."""
        return {"block": self.block_fc, "eps": self.eps, "n_iter": self.n_iter, "stats_grad": self.stats_grad,
                "max_samples": self.max_samples, "update_every": self.update_every, "scale": self.scale,
                "warm_start": self.warm_start}


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
_RULES: dict[type, Rule] = {}


def register_rule(*module_types: type) -> Callable[[R], R]:
    """Register the decorated function as the rule for ``module_types`` (replacing any earlier one)."""
    if not module_types:
        raise TypeError("register_rule needs at least one module type")

    def decorate(rule: R) -> R:
        for module_type in module_types:
            _RULES[module_type] = rule
        return rule

    return decorate


def get_rule(module: nn.Module) -> Rule | None:
    """The rule registered for ``type(module)``, or ``None``."""
    return _RULES.get(type(module))


def list_rules() -> dict[str, str]:
    """``{module type: rule name}`` of every registered rule."""
    return {f"{t.__module__}.{t.__qualname__}": rule.__name__ for t, rule in _RULES.items()}


class NormFreeAct(nn.Sequential):
    """What remains of a fused norm+activation layer once the norm is removed: drop, then act."""


def keep(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """Already a deconvolution layer: converting twice changes nothing. A patch-whitening stem is
    deconvolution's stem frozen at an estimate from data: it stays as it is."""
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
    ``n_iter``/``freeze_iter``. Depthwise convs stay plain unless ``whiten_depthwise``: whitening
    each channel's own k x k neighbourhood cost EfficientNet-B0 28 points after an epoch of
    CIFAR-10 (docs/fidelity.md)."""
    if is_depthwise(module) and not ctx.config.whiten_depthwise:
        return module
    settings = ctx.config.layer_settings(stem=ctx.is_stem, whiten=ctx.config.whitens(ctx.conv_index))
    return _CONV_LAYERS[type(module)].from_conv(module, bias=True, **settings)


@register_rule(nn.Linear, tl.Linear)
def linear_to_delinear(module: nn.Linear, ctx: ConversionContext) -> nn.Module:
    """The classifier becomes ``Delinear`` when ``block_fc > 0``; other linears stay."""
    if not ctx.is_classifier or ctx.config.block_fc <= 0:
        return module
    return Delinear.from_linear(module, **ctx.config.classifier_settings())


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d, tl.SplitBatchNorm2d)
def drop_batch_norm(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """Batch norms (plain, sync, frozen, split) are removed: deconvolution replaces them."""
    return nn.Identity()


@register_rule(tl.BatchNormAct2d, tl.SyncBatchNormAct, tl.FrozenBatchNormAct2d)
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


