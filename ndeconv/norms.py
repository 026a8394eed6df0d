"""The other targets of a BN model's conversion: GroupNorm (``gn``) and no normalisation (``none``).

They are the comparisons a user choosing deconvolution needs beside BN: GroupNorm (Wu and He,
2018) normalises each sample on its own, so it does not depend on the batch, and ``none``
removes the norms and whitens nothing, the control that shows what a normaliser buys. Both are
rules of the same registry as deconvolution (:func:`ndeconv.register_rule` with ``norm=``),
applied by :func:`ndeconv.convert_norm`.
"""

from __future__ import annotations

import itertools

import torch
from timm import layers as tl
from torch import nn

from .layers import PatchWhitening
from .rules import (BATCH_NORM_ACTS, BATCH_NORMS, CONVS, ConversionContext, NormFreeAct, drop_batch_norm,
                    drop_norm_keep_act, keep, register_rule)

__all__ = ["group_count", "MAX_GROUPS", "NORM_NAMES", "NORM_LABEL"]

#: Every norm a model can have (``model.norm``), with the words that name it, and its label in tables and plots.
NORM_NAMES = {"bn": "batch norm", "gn": "GroupNorm", "deconv": "deconvolution", "none": "no-norm"}
NORM_LABEL = {"bn": "BN", "gn": "GN", "deconv": "ND", "none": "none"}

#: GroupNorm's groups: 32 (the GroupNorm paper's default), or the largest divisor of the channels below it.
MAX_GROUPS = 32


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups`` (32 for 64 channels, 24 for 24)."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def _affine(norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A batch norm's scale and shift (``None`` without affine)."""
    return getattr(norm, "weight", None), getattr(norm, "bias", None)


def _copy_affine(source: nn.Module, target: nn.GroupNorm) -> nn.GroupNorm:
    """``target`` with ``source``'s scale and shift, trained or frozen as they were (a BN without
    affine leaves GroupNorm's 1 and 0)."""
    weight, bias = _affine(source)
    with torch.no_grad():
        for mine, theirs in ((target.weight, weight), (target.bias, bias)):
            if theirs is not None:
                mine.copy_(theirs)
                mine.requires_grad_(theirs.requires_grad)
    return target.train(source.training)


def _factory(module: nn.Module) -> dict:
    """The device and dtype of a norm's tensors (its affine, else its running statistics)."""
    ref = next(itertools.chain(module.parameters(), module.buffers()), None)
    return {} if ref is None else {"device": ref.device, "dtype": ref.dtype}


@register_rule(*BATCH_NORMS, norm="gn")
def batch_norm_to_group_norm(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """A batch norm becomes ``GroupNorm`` over :func:`group_count` groups with its eps, scale and shift."""
    channels = module.num_features
    norm = nn.GroupNorm(group_count(channels), channels, eps=module.eps, **_factory(module))
    return _copy_affine(module, norm)


@register_rule(*BATCH_NORM_ACTS, norm="gn")
def batch_norm_act_to_group_norm_act(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """timm's fused BN+act becomes timm's ``GroupNormAct`` keeping its drop and activation modules."""
    channels = module.num_features
    norm = tl.GroupNormAct(channels, group_count(channels), eps=module.eps, apply_act=False, **_factory(module))
    norm.drop, norm.act = module.drop, module.act
    return _copy_affine(module, norm)


register_rule(*CONVS, nn.GroupNorm, tl.GroupNormAct, NormFreeAct, PatchWhitening, norm="gn")(keep)


register_rule(*BATCH_NORMS, nn.GroupNorm, norm="none")(drop_batch_norm)
register_rule(*BATCH_NORM_ACTS, tl.GroupNormAct, norm="none")(drop_norm_keep_act)
register_rule(NormFreeAct, PatchWhitening, norm="none")(keep)


@register_rule(*CONVS, norm="none")
def conv_with_bias(module: nn.Module, ctx: ConversionContext) -> nn.Module:
    """A conv keeps its weights and gains a zero bias where it had none: the shift its removed norm
    held (as deconvolution's layers gain one)."""
    if module.bias is None:
        out = module.out_channels
        module.bias = nn.Parameter(torch.zeros(out, device=module.weight.device, dtype=module.weight.dtype))
    return module
