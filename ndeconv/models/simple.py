"""A small three-conv CNN for 8x8 to 28x28 inputs (digits, MNIST): the paper's quick sanity model."""

from __future__ import annotations

from timm.layers import ConvNormAct
from timm.models import register_model
from torch import nn

from ._common import CifarNet, check_entry_kwargs, finish


def _convnet3(in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0, width: int = 32) -> CifarNet:
    widths = (width, 2 * width, 4 * width)
    features = nn.Sequential(
        ConvNormAct(in_chans, widths[0], 3, act_layer=nn.ReLU),
        ConvNormAct(widths[0], widths[1], 3, act_layer=nn.ReLU),
        nn.MaxPool2d(2),
        ConvNormAct(widths[1], widths[2], 3, act_layer=nn.ReLU),
        nn.MaxPool2d(2),
    )
    return CifarNet(features, widths[2], num_classes, drop_rate)


@register_model
def convnet3(pretrained: bool = False, **kwargs) -> CifarNet:
    """Three 3x3 conv-BN-ReLU layers (32, 64, 128 channels), two max pools, a linear classifier."""
    return finish(_convnet3(**check_entry_kwargs("convnet3", pretrained, kwargs)), "convnet3",
                  "features.0.conv", "head.fc")
