"""Starting weights: PyTorch's default initialisation, the one the paper's models started from.

A layer whose input is whitened is nearly invariant to the scale of its weight, so an SGD step
changes it by about ``lr / ||W||^2`` relative to its size: the starting weight scale sets the
effective learning rate of a deconvolved model. Many timm models initialise their convs for BN
(``kaiming_normal_``, fan-out), with several times the squared norm of PyTorch's default
(``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), and then train
a deconvolved copy several times more slowly at the paper's learning rate.
"""

from __future__ import annotations

from torch import nn

from .recipe.schema import Init

__all__ = ["Init", "reset_parameters", "initialize"]


def reset_parameters(model: nn.Module) -> nn.Module:
    """Re-initialise ``model`` in place with PyTorch's defaults and return it.

    Every submodule that defines ``reset_parameters`` (convs, linears, norms, ...) calls it, so
    the weights are those a model written with plain ``torch.nn`` layers starts from, as the
    paper's models did. Call it before :func:`ndeconv.deconvolve` (which keeps the weights it is
    given).
    """
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return model


def initialize(model: nn.Module, init: Init) -> nn.Module:
    """Apply a recipe's ``model.init``: ``pytorch`` (:func:`reset_parameters`) or ``model`` (keep the model's own)."""
    if init == "pytorch":
        reset_parameters(model)
    elif init != "model":
        raise ValueError(f"init must be 'pytorch' or 'model', got {init!r}")
    return model
