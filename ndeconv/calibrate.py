"""A trained BN model to network deconvolution with its function kept (``deconvolve(model, calibrate=...)``).

A conv (weight ``W``, bias ``b``) followed by BN (running mean ``mu``, variance ``var``, ``eps``,
affine ``gamma``, ``beta``) computes ``s (W x + b) + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - s mu`` per output channel. Its deconvolution layer in eval computes ``W' D (x - m) + b'``
with the running estimates ``m``, ``D`` of its samples. Calibration batches run through the BN model
give each layer the mean and covariance of the samples it will see; with ``D`` the exact inverse
square root of that covariance, ``W' = diag(s) W D^-1`` and ``b' = s b + t + (s W) m`` make the two
identical. A BN that does not follow a conv directly (pre-activation blocks) becomes a fixed
per-channel affine; one after a conv that stays plain (depthwise) is folded into it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as DF
from .errors import UnsupportedLayerError
from .layers import ChannelAffine, Delinear, FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvSame

__all__ = ["norm_scale_shift", "norm_producers", "calibrate_layers"]

_CALIBRATED = (FastDeconv, FastDeconvSame, FastDeconv1d, FastDeconv3d, Delinear)


def _is_norm(module: nn.Module) -> bool:
    """A batch norm of any kind (torch's, timm's norm+act, torchvision's frozen one): it has running statistics."""
    return hasattr(module, "running_mean") and hasattr(module, "running_var") and not hasattr(module, "running_deconv")


def norm_scale_shift(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of a batch norm in eval: ``norm(y) = s y + t`` per channel (float64)."""
    var = norm.running_var.double()
    eps = float(getattr(norm, "eps", 1e-5))
    weight = norm.weight.double() if getattr(norm, "weight", None) is not None else torch.ones_like(var)
    bias = norm.bias.double() if getattr(norm, "bias", None) is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + eps)
    return scale, bias - scale * norm.running_mean.double()


def _consumers(outputs: Any) -> Counter:
    """How many operations of the autograd graph behind ``outputs`` use each node's result."""
    roots = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    counts: Counter = Counter()
    seen, stack = set(roots), list(roots)
    while stack:
        for parent, _ in stack.pop().next_functions:
            if parent is not None:
                counts[parent] += 1
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
    return counts


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for v in value for t in _tensors(v)] if isinstance(value, (list, tuple)) else []


def norm_producers(model: nn.Module, example: Tensor) -> dict[str, str | None]:
    """``{norm path: path of the conv or linear whose output it normalises, or None}``, from one eval
    forward: a norm fed a layer's output tensor itself follows that layer directly, and can be
    folded into it when nothing else uses that output (a stem whose output also feeds a residual
    connection cannot take the norm of the branch)."""
    paths = {id(m): name for name, m in model.named_modules()}
    made: dict[int, tuple[str, Tensor]] = {}  # the output tensors are kept, so their ids stay theirs
    fed: dict[str, Tensor | None] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks.append(module.register_forward_hook(
                lambda m, args, out: made.__setitem__(id(out), (paths[id(m)], out))))
        elif _is_norm(module):
            hooks.append(module.register_forward_pre_hook(lambda m, args: fed.__setitem__(paths[id(m)], args[0])))
    try:
        with torch.enable_grad():
            outputs = model.eval()(example.detach().requires_grad_())
    finally:
        for hook in hooks:
            hook.remove()
    consumers = _consumers(outputs)
    found: dict[str, str | None] = {}
    for norm, x in fed.items():
        producer = made.get(id(x))
        found[norm] = producer[0] if producer is not None and consumers[x.grad_fn] == 1 else None
    return found


def _samples(layer: nn.Module, x: Tensor) -> Tensor:
    """The ``(groups, m, f)`` samples ``layer`` whitens when fed ``x`` (as in its own forward)."""
    if isinstance(layer, Delinear):
        return DF.linear_samples(x, layer.block)
    if isinstance(layer, FastDeconvSame):
        x = nn.functional.pad(x, DF.same_padding(x.shape[-2:], layer.kernel_size, layer.stride, layer.dilation))
    if layer.padding_mode != "zeros":
        raise UnsupportedLayerError(f"calibrate: {type(layer).__name__} with padding_mode {layer.padding_mode!r}")
    return layer._patch_samples(x, layer.padding, layer.sampling_stride)


class _Moments:
    """Running sums of samples and their outer products (float64), per statistics group."""

    def __init__(self) -> None:
        self.count, self.total, self.outer = 0, None, None

    def add(self, samples: Tensor) -> None:
        s = samples.detach().double()
        self.count += s.shape[1]
        total, outer = s.sum(1), s.transpose(1, 2) @ s
        self.total = total if self.total is None else self.total + total
        self.outer = outer if self.outer is None else self.outer + outer

    def mean_and_whitening(self, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, ``D = Cov^(-1/2)`` and ``D^-1 = Cov^(1/2)``, exact (eigendecomposition)."""
        mean = self.total / self.count
        cov = self.outer / self.count - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        cov = cov + eps * torch.eye(cov.shape[-1], dtype=cov.dtype)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp(min=eps)
        root = (evecs * evals.sqrt().unsqueeze(-2)) @ evecs.transpose(-1, -2)
        inverse = (evecs * evals.rsqrt().unsqueeze(-2)) @ evecs.transpose(-1, -2)
        return mean, inverse, root


def _times_root(layer: nn.Module, weight: Tensor, root: Tensor) -> Tensor:
    """``W D^-1`` block by block (``root = D^-1``), in the layer's weight layout."""
    f = root.shape[-1]
    if isinstance(layer, Delinear):
        return (weight.reshape(1, -1, f) @ root).reshape(weight.shape)
    return DF.conv_weight_unblocks(DF.conv_weight_blocks(weight, layer.groups, f) @ root, weight.shape)


@torch.no_grad()
def _set_layer(layer: nn.Module, mean: Tensor, deconv: Tensor, root: Tensor,
               norm: tuple[Tensor, Tensor] | None) -> None:
    """Running estimates ``(mean, deconv)``, and weight and bias such that the layer's eval function is
    the plain layer it was, followed by the norm ``(s, t)`` if given."""
    weight, bias = layer.weight.double(), layer.bias.double()
    scale, shift = norm if norm is not None else (torch.ones_like(bias), torch.zeros_like(bias))
    target = weight * scale.view(-1, *[1] * (weight.dim() - 1))  # s W: the folded weight to reach
    new_weight = _times_root(layer, target, root)
    _, folded_bias = (DF.fold_linear(new_weight, None, mean, deconv) if isinstance(layer, Delinear)
                      else DF.fold_conv(new_weight, None, mean, deconv, layer.groups))
    layer.weight.copy_(new_weight.to(layer.weight.dtype))
    layer.bias.copy_((scale * bias + shift - folded_bias).to(layer.bias.dtype))
    for name, value in (("running_mean", mean), ("running_deconv", deconv), ("last_mean", mean),
                        ("last_deconv", deconv)):
        if hasattr(layer, name):
            getattr(layer, name).copy_(value.to(getattr(layer, name).dtype))


@torch.no_grad()
def _fold_into_plain(layer: nn.Module, norm: tuple[Tensor, Tensor]) -> None:
    """A conv that stays plain (depthwise) takes the norm after it: ``W <- s W``, ``b <- s b + t``."""
    scale, shift = norm
    weight = layer.weight.double()
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    layer.weight.copy_((weight * scale.view(-1, *[1] * (weight.dim() - 1))).to(layer.weight.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(scale, dtype=layer.weight.dtype))
    layer.bias.copy_((scale * bias + shift).to(layer.bias.dtype))


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


@torch.no_grad()
def calibrate_layers(bn_model: nn.Module, converted: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Give ``converted`` (``bn_model`` deconvolved; the same module paths, its norms removed) the
    function of ``bn_model`` in eval, from the statistics of ``batches`` (tensors, or tuples whose
    first item is the input) run through ``bn_model``; see the module's docstring. Returns ``converted``."""
    inputs = [b[0] if isinstance(b, (tuple, list)) else b for b in batches]
    if not inputs:
        raise ValueError("calibrate: no calibration batches")
    producers = norm_producers(bn_model, inputs[0])
    layers = {name: m for name, m in converted.named_modules() if isinstance(m, _CALIBRATED)}
    originals = dict(bn_model.named_modules())
    moments = {name: _Moments() for name in layers}
    hooks = [originals[name].register_forward_pre_hook(
        lambda m, args, name=name: moments[name].add(_samples(layers[name], args[0]))) for name in layers]
    try:
        for x in inputs:
            bn_model(x)
    finally:
        for hook in hooks:
            hook.remove()
    follows = {producer: norm for norm, producer in producers.items() if producer is not None}
    for name, layer in layers.items():
        mean, deconv, root = moments[name].mean_and_whitening(layer.eps)
        norm = follows.get(name)
        _set_layer(layer, mean, deconv, root, norm_scale_shift(originals[norm]) if norm else None)
    converted_modules = dict(converted.named_modules())
    for norm, producer in producers.items():
        if producer in layers:
            continue  # folded into its deconvolution layer above
        affine = norm_scale_shift(originals[norm])
        if producer is not None:  # a layer that stayed plain (a depthwise conv) takes it
            _fold_into_plain(converted_modules[producer], affine)
            continue
        fixed = ChannelAffine(*affine).to(originals[norm].running_var.device, originals[norm].running_var.dtype)
        rest = converted_modules[norm]  # Identity, or what a norm+act layer keeps (drop, act)
        _replace(converted, norm, nn.Sequential(fixed, *rest) if isinstance(rest, nn.Sequential) else fixed)
    return converted
