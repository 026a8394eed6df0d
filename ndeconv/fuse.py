"""``fuse``: a deconvolution network for inference, as the plain CNN it is in eval mode."""

from __future__ import annotations

import copy

from torch import nn

from .layers._whitening import WhiteningLayer
from .rules import NormFreeAct

__all__ = ["fuse"]


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every deconvolution layer replaced by a plain one.

    ``FastDeconv`` becomes ``nn.Conv2d`` (``FastDeconvSame`` timm's ``Conv2dSame``, ``FastDeconv1d``
    ``nn.Conv1d``, ``FastDeconv3d`` ``nn.Conv3d``,
    ``FastDeconvTranspose2d`` ``nn.ConvTranspose2d``) and ``Delinear`` ``nn.Linear`` with the running
    whitening folded into weight and bias (like ``torch.nn.utils.fusion.fuse_conv_bn_eval``);
    ``ChannelDeconv`` becomes a 1x1 ``nn.Conv2d`` (``nn.Linear`` if it trained on 2-D input) and
    ``NormFreeAct`` a plain ``nn.Sequential`` of the same modules: every deconvolution layer says
    what it becomes (``fused()``). The
    result computes the same eval function at the cost of the plain layers, has no ndeconv
    module left, and its ``state_dict`` loads into torch/timm modules without ndeconv.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, WhiteningLayer):
                setattr(parent, name, child.fused())
            elif isinstance(child, NormFreeAct):
                setattr(parent, name, nn.Sequential(*child))
            else:
                visit(child)

    visit(fused)
    for report in ("deconv_report", "norm_report"):  # ndeconv objects: the fused model must not need ndeconv
        fused.__dict__.pop(report, None)
    return fused
