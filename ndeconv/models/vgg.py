"""VGG for CIFAR: 3x3 conv-BN-ReLU stacks and max pools, one linear classifier."""

from __future__ import annotations

from timm.layers import ConvNormAct
from timm.models import register_model
from torch import nn

from ._common import CifarNet, check_entry_kwargs, finish

_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(variant: str, in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0) -> CifarNet:
    layers: list[nn.Module] = []
    channels = in_chans
    for item in _CFGS[variant]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(ConvNormAct(channels, item, 3, act_layer=nn.ReLU))
            channels = item
    return CifarNet(nn.Sequential(*layers), channels, num_classes, drop_rate)


@register_model
def vgg11_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """VGG-11 for 32x32 inputs (9.2M parameters with 10 classes)."""
    return finish(_vgg("vgg11", **check_entry_kwargs("vgg11_cifar", pretrained, kwargs)), "vgg11_cifar",
                  "features.0.conv", "head.fc")


@register_model
def vgg16_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """VGG-16 for 32x32 inputs (paper: 14.71M parameters)."""
    return finish(_vgg("vgg16", **check_entry_kwargs("vgg16_cifar", pretrained, kwargs)), "vgg16_cifar",
                  "features.0.conv", "head.fc")
