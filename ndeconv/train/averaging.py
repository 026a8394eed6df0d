"""Periodic weight averaging (the speed-record recipes' lookahead): every n steps the weights are
pulled to an exponential average of themselves and set equal to it; at the end they are the average."""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
from torch import Tensor, nn

__all__ = ["LookaheadCallback", "averaged_tensors"]


def averaged_tensors(model: nn.Module) -> dict[str, Tensor]:
    """What the average covers: every floating-point parameter and running estimate (``running_*``
    buffers: BatchNorm's statistics, a deconvolution layer's whitening), by name."""
    tensors = {name: p for name, p in model.named_parameters()}
    tensors.update({name: b for name, b in model.named_buffers()
                    if name.rsplit(".", 1)[-1].startswith("running_")})
    return {name: t for name, t in tensors.items() if t.is_floating_point()}


class LookaheadCallback(Callback):
    """After every ``every``-th optimizer step ``t`` of ``steps``, ``average <- w average + (1 - w) weights``
    with ``w = decay^every (t / steps)^power``, then ``weights <- average``; after the last step the
    weights become the average. The average is part of the run's checkpoint."""

    order = 95  # after the optimizer step and the step counting of StepLimit

    def __init__(self, every: int, decay: float, power: float, steps: int):
        self.every, self.decay, self.power, self.steps = every, decay, power, steps
        self.average: dict[str, Tensor] | None = None

    def _model(self) -> nn.Module:
        return self.learn.model.module if hasattr(self.learn.model, "module") else self.learn.model

    def before_fit(self) -> None:
        current = averaged_tensors(self._model())
        if self.average is None:  # a resumed run brings its own (checkpoint_state)
            self.average = {k: t.detach().clone() for k, t in current.items()}
        self.average = {k: v.to(current[k].device) for k, v in self.average.items()}

    def _step(self) -> int:
        return self.epoch * len(self.dls.train) + self.iter + 1

    @torch.no_grad()
    def _pull(self, weight: float) -> None:
        for name, tensor in averaged_tensors(self._model()).items():
            average = self.average[name]
            average.lerp_(tensor.to(average.device), 1.0 - weight)
            tensor.copy_(average)

    def after_batch(self) -> None:
        if not self.training:
            return
        step = self._step()
        if step % self.every == 0:
            self._pull(self.decay ** self.every * (step / self.steps) ** self.power)

    def after_train(self) -> None:
        if self._step_at_end() >= self.steps:
            self._pull(1.0)

    def _step_at_end(self) -> int:
        return self.epoch * len(self.dls.train) + len(self.dl)

    def checkpoint_state(self) -> dict[str, Tensor]:
        return dict(self.average or {})

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        self.average = {k: v.clone() for k, v in state.items()}
