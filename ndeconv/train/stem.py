"""Fitting a patch-whitening stem (:class:`~ndeconv.layers.PatchWhitening`) to the training images
before training, and training its bias for its first epochs only."""

from __future__ import annotations

from fastai.callback.core import Callback
from torch import nn

from ..layers import PatchWhitening

__all__ = ["PatchWhiteningCallback", "whitening_stems", "FIT_IMAGES"]

#: Training images a stem is fitted on (drawn at random, seeded by the run's seed).
FIT_IMAGES = 5000


def whitening_stems(model: nn.Module) -> list[PatchWhitening]:
    """The patch-whitening layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, PatchWhitening)]


class PatchWhiteningCallback(Callback):
    """Before the first epoch, fit every stem that holds no estimate yet to ``images`` normalised
    training images drawn at random (seeded by ``seed``), as validation normalises them; after its
    ``bias_epochs`` epochs, a stem's bias gradient is dropped before each optimizer step (its
    weight never trains)."""

    order = 5

    def __init__(self, seed: int = 0, images: int = FIT_IMAGES):
        self.seed, self.images = seed, images

    def before_fit(self) -> None:
        stems = [s for s in whitening_stems(self.learn.model) if not bool(s.fitted)]
        if not stems:
            return
        from ..data.loaders import normalised_training_images

        normalised = normalised_training_images(self.dls, self.images, self.seed)
        for stem in stems:
            stem.fit(normalised.to(stem.weight.device))

    def before_step(self) -> None:
        for stem in whitening_stems(self.learn.model):
            if stem.bias is not None and stem.bias_epochs is not None and self.epoch >= stem.bias_epochs:
                stem.bias.grad = None
