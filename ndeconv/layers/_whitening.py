"""What every deconvolution layer adds to its ``torch.nn`` twin: the estimator child that owns the
statistics, the input's channel standardisation (a ``BatchNorm`` child) and the eval fold cache."""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Literal, TypedDict

import torch
from torch import Tensor, nn

from .. import functional as DF
from ..recipe.deconv import check_setting
from .estimator import WhiteningEstimator, math_dtype

Fold = tuple[Tensor, Tensor]

#: How a layer makes itself invariant to the scale of its input (see :class:`WhiteningLayer`).
Scale = Literal["none", "channel"]


@contextlib.contextmanager
def float32_math(device: torch.device) -> Iterator[None]:
    """Statistics and folding run in float32 even inside ``torch.autocast``."""
    if device.type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device.type):
        with torch.autocast(device.type, enabled=False):
            yield
    else:
        yield


class WhiteningSettings(TypedDict, total=False):
    """The whitening settings every deconvolution layer takes, as keywords after the arguments of
    its ``torch.nn`` twin and in this order (what each does: :class:`~ndeconv.DeconvConfig`;
    ``sampling_stride`` is for the conv layers and ``ChannelDeconv``, ``small_batch`` and
    ``samples_per_dim`` for the conv layers). A model's conversion sets
    them from one :class:`~ndeconv.DeconvConfig`."""

    block: int
    sampling_stride: int
    small_batch: bool
    samples_per_dim: int | None
    eps: float
    n_iter: int
    momentum: float
    freeze_iter: int | None
    stats_grad: bool
    max_samples: int | None
    update_every: int
    scale: Scale


def _estimator_attribute(name: str, settable: bool = False) -> property:
    """A layer's view of its estimator's ``name`` (a buffer or a setting)."""
    def get(self):
        return getattr(self.estimator, name)

    def set_(self, value) -> None:
        setattr(self.estimator, name, value)

    return property(get, set_ if settable else None, doc=f"The estimator's ``{name}``.")


#: State dict keys of ndeconv 0.1 layers and where they live now.
_RENAMED = {**{name: f"estimator.{name}" for name in ("running_mean", "running_deconv", "num_batches_tracked",
                                                       "num_steps", "last_mean", "last_deconv")},
            "running_input_mean": "input_norm.running_mean", "running_input_var": "input_norm.running_var"}


class WhiteningLayer:
    """Base of the deconvolution layers (before their ``torch.nn`` class): ``estimator``, a
    :class:`~ndeconv.layers.estimator.WhiteningEstimator` of the layer's ``groups`` ``f``-dimensional
    patch distributions, and with ``scale="channel"`` ``input_norm``, a ``BatchNorm`` without affine
    that standardises each input channel before the input is padded and whitened, so the layer is
    invariant to its input's scale on every step, also on steps that reuse ``D``
    (``docs/method.md``, section 6); it uses its running moments once the layer is frozen.
    The estimator's buffers and settings read through the layer (``layer.running_deconv``).
    """

    estimator: WhiteningEstimator
    running_mean = _estimator_attribute("running_mean")
    running_deconv = _estimator_attribute("running_deconv")
    last_mean = _estimator_attribute("last_mean")
    last_deconv = _estimator_attribute("last_deconv")
    num_batches_tracked = _estimator_attribute("num_batches_tracked")
    num_steps = _estimator_attribute("num_steps")
    frozen = _estimator_attribute("frozen")
    update_momentum = _estimator_attribute("update_momentum")
    eps = _estimator_attribute("eps")
    n_iter = _estimator_attribute("n_iter")
    momentum = _estimator_attribute("momentum")
    stats_grad = _estimator_attribute("stats_grad")
    max_samples = _estimator_attribute("max_samples")
    update_every = _estimator_attribute("update_every")
    small_batch = _estimator_attribute("small_batch")
    freeze_iter = _estimator_attribute("freeze_iter", settable=True)
    sync_stats = _estimator_attribute("sync_stats", settable=True)
    process_group = _estimator_attribute("process_group", settable=True)

    #: Whether the channels are the input's last axis (a linear layer) rather than its second.
    _features_last = False
    #: Spatial axes of the input (1 for a linear layer's ``BatchNorm1d``).
    _norm_dims = 1

    def _init_whitening(self, groups: int, f: int, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, *, scale: Scale = "none", channels: int | None = None,
                        momentum: float = 0.1, eps: float = 1e-5, **estimator) -> None:
        """The estimator of ``groups`` ``f``-dimensional distributions (``estimator``: its settings)
        and, with ``scale="channel"``, the standardisation of the input's ``channels``."""
        check_setting("scale", scale)
        if scale != "none" and channels is None:
            raise ValueError(f"{type(self).__name__} does not support scale={scale!r}")
        self.estimator = WhiteningEstimator(groups, f, eps=eps, momentum=momentum, device=device, dtype=dtype,
                                            **estimator)
        self.channels, self.scale = channels, scale
        if scale == "channel":
            norm_type = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[self._norm_dims]
            self.input_norm = norm_type(channels, eps=eps, momentum=momentum, affine=False, device=device, dtype=dtype)
        self._fold_cache: tuple[tuple, Fold] | None = None

    def train(self, mode: bool = True):
        """Training mode, dropping the eval fold cache: an optimizer that updates ``p.data`` in
        place (fastai's) leaves a parameter's version counter as it was, so a cache keyed on it
        would outlive the weights it folded (a frozen layer's running estimate never changes to
        invalidate it)."""
        if mode:
            self._fold_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Load a state dict, also one written by ndeconv 0.1 (its buffers renamed; a missing last
        update taken from the running estimate, a missing BatchNorm count as zero)."""
        for old, new in _RENAMED.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        for part in ("mean", "deconv"):
            last, running = prefix + f"estimator.last_{part}", prefix + f"estimator.running_{part}"
            if last not in state_dict and running in state_dict:
                state_dict[last] = state_dict[running].clone()
        counted = prefix + "input_norm.num_batches_tracked"
        if self.scale == "channel" and counted not in state_dict and prefix + "input_norm.running_mean" in state_dict:
            state_dict[counted] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _standardized(self, x: Tensor) -> Tensor:
        """The input as the layer whitens it: with ``scale="channel"``, each channel standardised by
        the batch's moments in training until the layer freezes, else by the running ones."""
        if self.scale == "none":
            return x
        dtype, norm = x.dtype, self.input_norm
        x = x.to(math_dtype(dtype))
        batch = self.training and not self.frozen
        if batch and self.estimator.syncing():
            return self._synced_channel_norm(x).to(dtype)
        flat = x.reshape(-1, x.shape[-1]) if self._features_last else x
        out = torch.nn.functional.batch_norm(flat, norm.running_mean, norm.running_var, None, None, batch,
                                             norm.momentum, norm.eps)
        if batch:
            norm.num_batches_tracked.add_(1)
        return out.view_as(x).to(dtype)

    def _synced_channel_norm(self, x: Tensor) -> Tensor:
        """The channel standardisation with the moments of the global batch (all processes), moving
        the running ones as ``BatchNorm`` does (the variance unbiased); with their gradient whatever
        ``stats_grad`` says, as in one process."""
        dim, norm = -1 if self._features_last else 1, self.input_norm
        mean, var = DF.channel_moments(x, dim, self.process_group, sync=True)
        count = x.numel() // x.shape[dim] * torch.distributed.get_world_size(self.process_group)
        with torch.no_grad():
            norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), norm.momentum)
            norm.running_var.lerp_((var * count / max(count - 1, 1)).to(norm.running_var.dtype), norm.momentum)
            norm.num_batches_tracked.add_(1)
        shape = [-1 if d == dim % x.dim() else 1 for d in range(x.dim())]
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + norm.eps)

    def _with_input_norm(self, layer: nn.Module) -> nn.Module:
        """``layer`` after a copy of the eval standardisation, if the layer has one (for ``fused()``)."""
        if self.scale == "none":
            return layer
        norm = copy.deepcopy(self.input_norm).train(self.training)
        return nn.Sequential(norm, layer).train(self.training)

    def _running_whitening(self) -> tuple[Tensor, Tensor]:
        """The eval whitening ``(running mean, running D)``."""
        return self.running_mean, self.running_deconv

    def _fold_cached(self, fold: Callable[[], Fold], inputs: tuple[Tensor | None, ...]) -> Fold:
        """``fold()``, memoised in eval while none of ``inputs`` changed (data pointer, version) and the
        layer was not put back in training mode.

        Training, or a forward that needs gradients to the weights, always folds afresh, so eval
        under ``no_grad`` costs one plain convolution / matmul. Under ``torch.compile`` the fold is
        part of the graph (no cache, no graph break); :func:`ndeconv.fuse` removes it entirely.
        """
        tensors = [t for t in inputs if t is not None]
        if (
            torch.compiler.is_compiling()  # the cache key (data pointers) cannot be traced: fold in-graph
            or self.training
            or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            or any(t.is_inference() for t in tensors)
        ):
            return fold()
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if self._fold_cache is None or self._fold_cache[0] != key:
            with torch.no_grad():
                self._fold_cache = (key, fold())
        return self._fold_cache[1]

    def _whitening_extra_repr(self) -> str:
        """The layer's own setting for its repr, after a comma (the estimator child prints the others)."""
        return f", scale={self.scale!r}" if self.scale != "none" else ""
