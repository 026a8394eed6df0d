"""State shared by every deconvolution layer: running estimates, freezing, the eval fold cache."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypedDict

import torch
from torch import Tensor

from .. import functional as DF

Fold = tuple[Tensor, Tensor]


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
    ``sampling_stride`` is for the conv layers and ``ChannelDeconv``). A model's conversion sets
    them from one :class:`~ndeconv.DeconvConfig`."""

    block: int
    sampling_stride: int
    eps: float
    n_iter: int
    momentum: float
    freeze_iter: int | None
    stats_grad: bool
    max_samples: int | None
    update_every: int


class WhiteningState:
    """Mixin for ``nn.Module`` subclasses that whiten ``f``-dimensional samples in ``groups`` groups.

    Holds ``running_mean (groups, f)``, ``running_deconv (groups, f, f)`` (the inverse square root
    of the covariance, initially the identity) and ``num_batches_tracked`` (batches whose
    statistics were computed), updated like BatchNorm's running statistics, and ``num_steps``
    (training forwards). After ``freeze_iter`` training steps the running estimate is used in
    training too (the paper's first-layer setting).

    ``update_every = k`` recomputes the batch's statistics (and their gradient) only on every k-th
    training step, the first included, and whitens with the running estimate in between: those
    steps cost only the fold. The running estimates keep their meaning, an average over about the
    last ``1 / momentum`` steps: each update moves them by ``1 - (1 - momentum)^k``, what k
    updates would have moved them. ``k = 1`` is the paper's layer.

    Faster, non-default options: ``stats_grad=False`` treats the batch's mean and ``D`` as
    constants in backward (gradients reach the weights only through the fold);
    ``max_samples`` keeps at most that many samples (evenly spaced) for the statistics.
    ``sync_stats`` (set by :func:`ndeconv.sync_deconv_stats`) all-reduces the statistics over
    ``process_group`` so every process whitens with those of the global batch.
    """

    running_mean: Tensor
    running_deconv: Tensor
    num_batches_tracked: Tensor
    num_steps: Tensor

    def _init_whitening(self, groups: int, f: int, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, *, eps: float = 1e-5, n_iter: int = 5,
                        momentum: float = 0.1, freeze_iter: int | None = None, stats_grad: bool = True,
                        max_samples: int | None = None, update_every: int = 1) -> None:
        """Validate and keep the settings (all but ``block`` and ``sampling_stride``, which the
        layer resolves) and register the running estimates of ``groups`` ``f``-dimensional
        distributions."""
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, got {n_iter}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer or None, got {max_samples}")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {update_every}")
        self.eps, self.n_iter, self.momentum, self.freeze_iter = float(eps), int(n_iter), float(momentum), freeze_iter
        self.stats_grad, self.max_samples, self.update_every = bool(stats_grad), max_samples, update_every
        eye = torch.eye(f, device=device, dtype=dtype)
        self.register_buffer("running_mean", torch.zeros(groups, f, device=device, dtype=dtype))
        self.register_buffer("running_deconv", eye.expand(groups, f, f).clone())
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("num_steps", torch.tensor(0, dtype=torch.long, device=device))
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # layers saved before num_steps existed had taken one step per tracked batch
        if prefix + "num_steps" not in state_dict and prefix + "num_batches_tracked" in state_dict:
            state_dict[prefix + "num_steps"] = state_dict[prefix + "num_batches_tracked"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _stats_grad_mode(self) -> torch.autograd.grad_mode.set_grad_enabled:
        """Grad mode for computing batch statistics: off when ``stats_grad=False``."""
        return torch.set_grad_enabled(self.stats_grad and torch.is_grad_enabled())

    def _syncing(self) -> bool:
        """Whether batch statistics are all-reduced over the processes (see :func:`ndeconv.sync_deconv_stats`)."""
        if not getattr(self, "sync_stats", False) or not torch.distributed.is_initialized():
            return False
        return torch.distributed.get_world_size(self.process_group) > 1

    def _estimate(self, samples: Callable[[], Tensor], dtype: torch.dtype,
                  use_batch: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, deconv)`` in ``math_dtype(dtype)``: the batch's on a step that updates (updating
        the running estimates), else the running ones.

        Call inside :func:`float32_math`, once per forward (it counts the step) unless ``use_batch``
        passes the decision of an earlier :meth:`_take_step`. ``samples`` builds the
        ``(groups, m, f)`` samples lazily.
        """
        dtype = math_dtype(dtype)
        if not (self._take_step() if use_batch is None else use_batch):
            return self.running_mean.to(dtype), self.running_deconv.to(dtype)
        with self._stats_grad_mode():
            batch = samples().to(dtype)
            if self.max_samples is not None and batch.shape[1] > self.max_samples:
                batch = batch[:, :: -(-batch.shape[1] // self.max_samples)]
            if self._syncing():
                mean, cov = DF.sync_whitening_stats(batch, self.eps, self.process_group)
            else:
                mean, cov = DF.whitening_stats(batch, self.eps)
            deconv = DF.isqrt_newton_schulz(cov, self.n_iter)
        with torch.no_grad():
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
        return f"eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}{extra}"
