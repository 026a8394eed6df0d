"""A run's length, counted in one place: the optimizer steps each process takes, and the epochs they span."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import RecipeError
from ..recipe import TrainSpec

__all__ = ["RunLength", "run_length"]


@dataclass(frozen=True)
class RunLength:
    """``steps`` optimizer steps per process, ``steps_per_epoch`` of them in a full epoch (the
    training loader's batches per process); the last epoch is partial when one does not divide the other."""

    steps: int
    steps_per_epoch: int

    @property
    def epochs(self) -> int:
        """Epochs the run spans, the last one possibly partial."""
        return math.ceil(self.steps / self.steps_per_epoch)

    @property
    def partial(self) -> bool:
        """Whether the last epoch ends before the loader does."""
        return self.steps != self.epochs * self.steps_per_epoch


def run_length(train: TrainSpec, steps_per_epoch: int) -> RunLength:
    """The length of a run with ``train``'s settings: ``train.steps``, or ``train.epochs`` of
    ``steps_per_epoch`` (a fraction of an epoch rounded up to a whole step). A budget must have
    been turned into steps first (:func:`ndeconv.train.budget.calibrate`)."""
    if steps_per_epoch < 1:
        raise RecipeError("the training split is smaller than one batch of one process: lower train.batch_size")
    if train.steps is not None:
        return RunLength(train.steps, steps_per_epoch)
    if train.epochs is None:
        raise RecipeError("train.budget has no steps yet: a budgeted run is calibrated before its length is known")
    return RunLength(math.ceil(train.epochs * steps_per_epoch), steps_per_epoch)
