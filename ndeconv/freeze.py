"""``freeze``: deconvolution layers that whiten with their running estimates, in training too."""

from __future__ import annotations

from torch import nn

from .layers._whitening import WhiteningLayer

__all__ = ["freeze"]


def freeze(model: nn.Module) -> nn.Module:
    """Freeze every deconvolution layer of ``model`` in place and return it (the analogue of
    ``FrozenBatchNorm2d`` for a detection or segmentation backbone being fine-tuned).

    A frozen layer whitens with its running estimates in training as in eval: no batch statistics,
    no gradient through ``D`` or the mean, nothing moved (a ``scale: channel`` standardisation
    uses its running moments too). It stays frozen when a parent module calls ``.train()``
    (the flag is the layer's ``freeze_iter`` of 0 steps, not its mode), so ``fuse`` of a frozen
    model is exact in training and eval alike.
    """
    for layer in model.modules():
        if isinstance(layer, WhiteningLayer):
            layer.freeze_iter = 0
    return model
