"""State shared by every deconvolution layer: running estimates, freezing, the eval fold cache."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Literal, TypedDict

import torch
from torch import Tensor

from .. import functional as DF
from ..recipe.deconv import check_setting

Fold = tuple[Tensor, Tensor]

#: How a layer makes itself invariant to the scale of its input (see :class:`WhiteningState`).
Scale = Literal["none", "channel"]


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision of statistics and folding: float32 at least (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


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
    its ``torch.nn`` twin and in this order (what each does: :class:`WhiteningState`;
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


class WhiteningState:
    """Mixin for ``nn.Module`` subclasses that whiten ``f``-dimensional samples in ``groups`` groups.

    Holds ``running_mean (groups, f)``, ``running_deconv (groups, f, f)`` (the inverse square root
    of the covariance, initially the identity) and ``num_batches_tracked`` (batches whose
    statistics were computed), updated like BatchNorm's running statistics, and ``num_steps``
    (training forwards). After ``freeze_iter`` training steps the running estimate is used in
    training too (the paper's first-layer setting).

    ``update_every = k`` recomputes the batch's statistics (and their gradient) only on every k-th
    training step, the first included, and whitens with the last update's estimate in between
    (``last_mean``, ``last_deconv``): those steps cost only the fold. (Not with the running
    estimate: an average over the last ten or so updates, which lags far behind a network that
    trains at the paper's learning rate, early in training most of all.) The running estimates
    keep their meaning, an average over about the last ``1 / momentum`` steps: each update moves
    them by ``1 - (1 - momentum)^k``, what k updates would have moved them. ``k = 1`` is the
    paper's layer.

    Faster, non-default options: ``stats_grad=False`` treats the batch's mean and ``D`` as
    constants in backward (gradients reach the weights only through the fold);
    ``max_samples`` keeps at most that many samples (evenly spaced) for the statistics.
    ``sync_stats`` (set by :func:`ndeconv.sync_deconv_stats`) all-reduces the statistics over
    ``process_group`` so every process whitens with those of the global batch.

    ``scale="channel"`` makes the layer invariant to the scale of its input on every step,
    including the steps that reuse ``D`` (``docs/method.md``, section 6), by standardising each
    input channel by the batch's mean and variance before the input is padded and whitened
    (``BatchNorm`` without affine: its running statistics ``running_input_mean`` /
    ``running_input_var`` serve eval), with the gradient through them.

    ``samples_per_dim`` (conv layers): statistics from the coarsest sampling stride, at least
    ``sampling_stride``, that still gives that many samples per dimension of the covariance
    (``m >= samples_per_dim * f``): large early feature maps give far more than a stable estimate
    needs, and gathering and multiplying them is most of the statistics' cost.

    ``small_batch`` (the conv layers' default): a batch whose sampled positions give fewer samples
    than the covariance is wide takes every position instead, and a covariance still estimated
    from fewer samples than its width is shrunk towards its diagonal by the Schafer-Strimmer
    intensity (:func:`ndeconv.functional.diagonal_shrinkage`; ``docs/method.md``). Not with
    synchronised statistics, whose global batch is the remedy.
    """

    running_mean: Tensor
    running_deconv: Tensor
    num_batches_tracked: Tensor
    num_steps: Tensor
    #: Shrink a covariance estimated from fewer samples than its width towards its diagonal (the conv layers set it).
    small_batch: bool = False

    def _init_whitening(self, groups: int, f: int, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, *, eps: float = 1e-5, n_iter: int = 5,
                        momentum: float = 0.1, freeze_iter: int | None = None, stats_grad: bool = True,
                        max_samples: int | None = None, update_every: int = 1, scale: Scale = "none",
                        channels: int | None = None) -> None:
        """Validate and keep the settings (all but ``block`` and ``sampling_stride``, which the
        layer resolves) and register the running estimates of ``groups`` ``f``-dimensional
        distributions (and, with ``scale="channel"``, of the input's ``channels``)."""
        for name, value in (("eps", eps), ("n_iter", n_iter), ("stats_grad", stats_grad), ("max_samples", max_samples),
                            ("update_every", update_every), ("scale", scale)):
            check_setting(name, value)  # the same checks and messages as a recipe's and deconvolve's
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if scale != "none" and channels is None:
            raise ValueError(f"{type(self).__name__} does not support scale={scale!r}")
        self.channels, self.scale = channels, scale
        self.eps, self.n_iter, self.momentum, self.freeze_iter = float(eps), int(n_iter), float(momentum), freeze_iter
        self.stats_grad, self.max_samples, self.update_every = bool(stats_grad), max_samples, update_every
        eye = torch.eye(f, device=device, dtype=dtype)
        self.register_buffer("running_mean", torch.zeros(groups, f, device=device, dtype=dtype))
        self.register_buffer("running_deconv", eye.expand(groups, f, f).clone())
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("num_steps", torch.tensor(0, dtype=torch.long, device=device))
        if update_every > 1:  # the last update's estimate, whitened with until the next one
            self.register_buffer("last_mean", torch.zeros(groups, f, device=device, dtype=dtype))
            self.register_buffer("last_deconv", eye.expand(groups, f, f).clone())
        if scale == "channel":
            self.register_buffer("running_input_mean", torch.zeros(channels, device=device, dtype=dtype))
            self.register_buffer("running_input_var", torch.ones(channels, device=device, dtype=dtype))
        self._fold_cache: tuple[tuple, Fold] | None = None
        self.sync_stats: bool = False
        self.process_group: object | None = None

    @property
    def frozen(self) -> bool:
        """Whether training uses the running estimate for good (``freeze_iter`` steps taken)."""
        return self.freeze_iter is not None and int(self.num_steps) >= self.freeze_iter

    @property
    def update_momentum(self) -> float:
        """How far one update moves the running estimates: ``momentum`` compounded over ``update_every`` steps
        (exactly ``momentum`` for k = 1: ``1 - (1 - 0.1)`` is not 0.1 in floating point)."""
        if self.update_every == 1:
            return self.momentum
        return 1.0 - (1.0 - self.momentum) ** self.update_every

    def _take_step(self) -> bool:
        """Whether this forward whitens with the batch's statistics; a training forward counts a step.

        The paper's setting (every step, never frozen) does not read the counter, so it adds no
        graph break under ``torch.compile``.
        """
        if not self.training:
            return False
        if self.update_every == 1 and self.freeze_iter is None:
            self.num_steps.add_(1)
            return True
        step = int(self.num_steps)
        self.num_steps.add_(1)
        return (self.freeze_iter is None or step < self.freeze_iter) and step % self.update_every == 0

    def train(self, mode: bool = True):
        """Training mode, dropping the eval fold cache: an optimizer that updates ``p.data`` in
        place (fastai's) leaves a parameter's version counter as it was, so a cache keyed on it
        would outlive the weights it folded (a frozen layer's running estimate never changes to
        invalidate it)."""
        if mode:
            self._fold_cache = None
        return super().train(mode)

    def _stats_grad_mode(self) -> torch.autograd.grad_mode.set_grad_enabled:
        """Grad mode for computing batch statistics: off when ``stats_grad=False``."""
        return torch.set_grad_enabled(self.stats_grad and torch.is_grad_enabled())

    def _syncing(self) -> bool:
        """Whether batch statistics are all-reduced over the processes (see :func:`ndeconv.sync_deconv_stats`)."""
        if not getattr(self, "sync_stats", False) or not torch.distributed.is_initialized():
            return False
        return torch.distributed.get_world_size(self.process_group) > 1

    def _standardized(self, x: Tensor) -> Tensor:
        """The input as the layer whitens it: standardised per sample or per channel with a ``scale``
        (the channel moments are the batch's in training until the layer freezes, else the running
        ones, which a batch moves by ``momentum``)."""
        if self.scale == "none":
            return x
        dtype = x.dtype
        x = x.to(math_dtype(dtype))
        if self.training and not self.frozen and self._syncing():
            return self._synced_channel_norm(x).to(dtype)
        flat = x.reshape(-1, x.shape[-1]) if self._features_last else x
        out = torch.nn.functional.batch_norm(flat, self.running_input_mean, self.running_input_var, None, None,
                                             self.training and not self.frozen, self.momentum, self.eps)
        return out.view_as(x).to(dtype)

    #: Whether the channels are the input's last axis (a linear layer) rather than its second.
    _features_last = False

    def _synced_channel_norm(self, x: Tensor) -> Tensor:
        """The channel standardisation with the moments of the global batch (all processes), moving
        the running ones as ``BatchNorm`` does (the variance unbiased); with their gradient whatever
        ``stats_grad`` says, as in one process."""
        dim = -1 if self._features_last else 1
        mean, var = DF.channel_moments(x, dim, self.process_group, sync=True)
        count = x.numel() // x.shape[dim] * torch.distributed.get_world_size(self.process_group)
        with torch.no_grad():
            self.running_input_mean.lerp_(mean.to(self.running_input_mean.dtype), self.momentum)
            unbiased = var * count / max(count - 1, 1)
            self.running_input_var.lerp_(unbiased.to(self.running_input_var.dtype), self.momentum)
        shape = [-1 if d == dim % x.dim() else 1 for d in range(x.dim())]
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)

    def _input_norm(self) -> torch.nn.Module | None:
        """The ``torch.nn`` module of the standardisation in eval (``None`` without a ``scale``), for ``fused()``."""
        from torch import nn

        if self.scale == "channel":
            norm_type = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[self._norm_dims]
            norm = norm_type(self.channels, eps=self.eps, momentum=self.momentum, affine=False,
                             device=self.running_input_mean.device, dtype=self.running_input_mean.dtype)
            norm.running_mean.copy_(self.running_input_mean)
            norm.running_var.copy_(self.running_input_var)
            return norm.train(self.training)
        return None

    #: Spatial axes of the input (1 for a linear layer's ``BatchNorm1d``).
    _norm_dims = 1

    def _with_input_norm(self, layer: torch.nn.Module) -> torch.nn.Module:
        """``layer`` after the eval standardisation, if the layer has one."""
        norm = self._input_norm()
        return layer if norm is None else torch.nn.Sequential(norm, layer).train(self.training)

    def _running_whitening(self) -> tuple[Tensor, Tensor]:
        """The eval whitening ``(running mean, running D)``."""
        return self.running_mean, self.running_deconv

    def _estimate(self, samples: Callable[[], Tensor], dtype: torch.dtype,
                  use_batch: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, deconv)`` in ``math_dtype(dtype)``: the batch's on a step that updates (updating
        the running estimates); on a training step in between the last update's (with
        ``update_every > 1``); else the running ones.

        Call inside :func:`float32_math`, once per forward (it counts the step) unless ``use_batch``
        passes the decision of an earlier :meth:`_take_step`. ``samples`` builds the
        ``(groups, m, f)`` samples lazily.
        """
        dtype = math_dtype(dtype)
        between = self.training and not self.frozen  # a training step, whether it updates or not
        if not (self._take_step() if use_batch is None else use_batch):
            if between and hasattr(self, "last_deconv"):  # copies: the next update changes them in place
                return self.last_mean.to(dtype).clone(), self.last_deconv.to(dtype).clone()
            mean, deconv = self._running_whitening()
            return mean.to(dtype), deconv.to(dtype)
        with self._stats_grad_mode():
            batch = samples().to(dtype)
            if self.max_samples is not None and batch.shape[1] > self.max_samples:
                batch = batch[:, :: -(-batch.shape[1] // self.max_samples)]
            if self._syncing():
                mean, cov = DF.sync_whitening_stats(batch, self.eps, self.process_group)
            else:
                mean, cov = DF.whitening_stats(batch, self.eps)
                if self.small_batch and batch.shape[1] < batch.shape[2]:
                    cov = DF.shrink_to_diagonal(cov, DF.diagonal_shrinkage(batch))
            deconv = DF.isqrt_newton_schulz(cov, self.n_iter)
        with torch.no_grad():
            if hasattr(self, "last_deconv"):
                self.last_mean.copy_(mean)
                self.last_deconv.copy_(deconv)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.update_momentum)
            self.running_deconv.lerp_(deconv.to(self.running_deconv.dtype), self.update_momentum)
            self.num_batches_tracked.add_(1)
        return mean, deconv

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
        extra = f", freeze_iter={self.freeze_iter}" if self.freeze_iter is not None else ""
        extra += "" if self.stats_grad else ", stats_grad=False"
        extra += f", max_samples={self.max_samples}" if self.max_samples is not None else ""
        extra += f", update_every={self.update_every}" if self.update_every != 1 else ""
        extra += f", scale={self.scale!r}" if self.scale != "none" else ""
        return f"eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}{extra}"
