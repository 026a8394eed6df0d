"""DenseNet-121 for CIFAR: timm's DenseNet with a 3x3 stride-1 stem and no stem pooling."""

from __future__ import annotations

from timm.models import register_model
from timm.models.densenet import DenseNet
from torch import nn

from ._common import check_entry_kwargs, finish


@register_model
def densenet121_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-121 (growth 32, blocks 6-12-24-16) for 32x32 inputs (paper: 6.88M parameters)."""
    kwargs = check_entry_kwargs("densenet121_cifar", pretrained, kwargs)
    kwargs.setdefault("num_classes", 10)
    model = DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), **kwargs)
    stem = model.features.conv0
    model.features.conv0 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, padding=1, bias=False)
    model.features.pool0 = nn.Identity()
    return finish(model, "densenet121_cifar", "features.conv0", "classifier")
