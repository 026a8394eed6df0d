"""``WhiteningEstimator``: the child module of a deconvolution layer that owns its statistics, its
running estimates and when it updates them (as ``BatchNorm`` owns its running statistics)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .. import functional as DF
from ..recipe.deconv import check_setting

__all__ = ["WhiteningEstimator", "math_dtype"]


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision of statistics and folding: float32 at least (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


class WhiteningEstimator(nn.Module):
    """The whitening ``(mean, D)`` of ``groups`` ``f``-dimensional distributions, ``D = Cov^(-1/2)``.

    Buffers, the same whatever the settings: ``running_mean (groups, f)`` and ``running_deconv
    (groups, f, f)`` (initially zero and the identity), moved like BatchNorm's running statistics
    and used in eval; ``last_mean``/``last_deconv``, the last update's, which training steps between
    updates whiten with; ``num_batches_tracked`` (updates) and ``num_steps`` (training forwards).

    The update policy: a training step updates on every ``update_every``-th step (the first
    included; 1: every step, the paper's layer) until ``freeze_iter`` steps have been taken, after
    which it whitens with the running estimate for good (the paper's first-layer setting). Each
    update moves the running estimates by ``1 - (1 - momentum)^update_every``, what that many
    single-step updates would have, so they keep their meaning (an average over about the last
    ``1 / momentum`` steps). ``stats_grad=False`` makes the batch's mean and ``D`` constants in
    backward; ``max_samples`` keeps at most that many samples, evenly spaced; ``small_batch``
    shrinks a covariance estimated from fewer samples than its width towards its diagonal
    (Schafer-Strimmer, :func:`ndeconv.functional.diagonal_shrinkage`), except with synchronised
    statistics. ``sync_stats`` (set by :func:`ndeconv.sync_deconv_stats`) all-reduces the statistics
    over ``process_group``.
    """

    def __init__(self, groups: int, f: int, *, eps: float = 1e-5, n_iter: int = 5, momentum: float = 0.1,
                 freeze_iter: int | None = None, stats_grad: bool = True, max_samples: int | None = None,
                 update_every: int = 1, small_batch: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value in (("eps", eps), ("n_iter", n_iter), ("stats_grad", stats_grad), ("max_samples", max_samples),
                            ("update_every", update_every), ("small_batch", small_batch)):
            check_setting(name, value)  # the same checks and messages as a recipe's and deconvolve's
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.eps, self.n_iter, self.momentum, self.freeze_iter = float(eps), int(n_iter), float(momentum), freeze_iter
        self.stats_grad, self.max_samples, self.update_every = stats_grad, max_samples, update_every
        self.small_batch = small_batch
        eye = torch.eye(f, device=device, dtype=dtype).expand(groups, f, f)
        for prefix in ("running", "last"):
            self.register_buffer(f"{prefix}_mean", torch.zeros(groups, f, device=device, dtype=dtype))
            self.register_buffer(f"{prefix}_deconv", eye.clone())
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("num_steps", torch.tensor(0, dtype=torch.long, device=device))
        self.sync_stats: bool = False
        self.process_group: object | None = None

    @property
    def frozen(self) -> bool:
        """Whether training uses the running estimate for good (``freeze_iter`` steps taken)."""
        return self.freeze_iter is not None and int(self.num_steps) >= self.freeze_iter

    @property
    def update_momentum(self) -> float:
        """How far one update moves the running estimates: ``momentum`` compounded over ``update_every``
        steps (exactly ``momentum`` for k = 1: ``1 - (1 - 0.1)`` is not 0.1 in floating point)."""
        return self.momentum if self.update_every == 1 else 1.0 - (1.0 - self.momentum) ** self.update_every

    def take_step(self) -> bool:
        """Whether this forward whitens with the batch's statistics; a training forward counts a step.
        The paper's setting (every step, never frozen) does not read the counter, so it adds no graph
        break under ``torch.compile``."""
        if not self.training:
            return False
        if self.update_every == 1 and self.freeze_iter is None:
            self.num_steps.add_(1)
            return True
        step = int(self.num_steps)
        self.num_steps.add_(1)
        return (self.freeze_iter is None or step < self.freeze_iter) and step % self.update_every == 0

    def syncing(self) -> bool:
        """Whether batch statistics are all-reduced over the processes."""
        if not self.sync_stats or not torch.distributed.is_initialized():
            return False
        return torch.distributed.get_world_size(self.process_group) > 1

    def stats_grad_mode(self) -> torch.autograd.grad_mode.set_grad_enabled:
        """Grad mode for computing batch statistics: off when ``stats_grad=False``."""
        return torch.set_grad_enabled(self.stats_grad and torch.is_grad_enabled())

    def forward(self, samples: Callable[[], Tensor], dtype: torch.dtype, use_batch: bool | None = None
                ) -> tuple[Tensor, Tensor]:
        """``(mean, D)`` in ``math_dtype(dtype)``: the batch's on a step that updates (moving the running
        estimates), the last update's on a training step in between, else the running ones.

        Call once per forward of the layer (it counts the step) unless ``use_batch`` passes the
        decision of an earlier :meth:`take_step`; ``samples`` builds the ``(groups, m, f)`` samples
        only when they are needed."""
        dtype = math_dtype(dtype)
        between = self.training and not self.frozen  # a training step, whether it updates or not
        if not (self.take_step() if use_batch is None else use_batch):
            if between:  # copies: the next update changes them in place
                return self.last_mean.to(dtype).clone(), self.last_deconv.to(dtype).clone()
            return self.running_mean.to(dtype), self.running_deconv.to(dtype)
        with self.stats_grad_mode():
            mean, deconv = self._batch_whitening(samples().to(dtype))
        with torch.no_grad():
            if self.update_every > 1:
                self.last_mean.copy_(mean)
                self.last_deconv.copy_(deconv)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.update_momentum)
            self.running_deconv.lerp_(deconv.to(self.running_deconv.dtype), self.update_momentum)
            self.num_batches_tracked.add_(1)
        return mean, deconv

    def _batch_whitening(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and ``Cov^(-1/2)`` of ``(groups, m, f)`` samples."""
        if self.max_samples is not None and batch.shape[1] > self.max_samples:
            batch = batch[:, :: -(-batch.shape[1] // self.max_samples)]
        if self.syncing():
            mean, cov = DF.sync_whitening_stats(batch, self.eps, self.process_group)
        else:
            mean, cov = DF.whitening_stats(batch, self.eps)
            if self.small_batch and batch.shape[1] < batch.shape[2]:
                cov = DF.shrink_to_diagonal(cov, DF.diagonal_shrinkage(batch))
        return mean, DF.isqrt_newton_schulz(cov, self.n_iter)

    def extra_repr(self) -> str:
        extra = f", freeze_iter={self.freeze_iter}" if self.freeze_iter is not None else ""
        extra += "" if self.stats_grad else ", stats_grad=False"
        extra += f", max_samples={self.max_samples}" if self.max_samples is not None else ""
        extra += f", update_every={self.update_every}" if self.update_every != 1 else ""
        return f"eps={self.eps}, n_iter={self.n_iter}, momentum={self.momentum}{extra}"
