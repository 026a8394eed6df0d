"""PNASNet-A for CIFAR: cells of a 7x7 separable conv branch plus a max-pool branch."""

from __future__ import annotations

import torch.nn.functional as F
from timm.models import register_model
from torch import Tensor, nn

from ._common import CifarNet, check_entry_kwargs, finish


class CellA(nn.Module):
    """``relu(sepconv7x7(x) + maxpool3x3(x))``; at stride 2 the pool branch is projected by 1x1 conv-BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.sep = nn.Sequential(nn.Conv2d(cin, cout, 7, stride, 3, groups=cin, bias=False), nn.BatchNorm2d(cout))
        self.project = None
        if stride == 2:
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.max_pool2d(x, 3, self.stride, 1)
        if self.project is not None:
            pooled = self.project(pooled)
        return self.act(self.sep(x) + pooled)


def _pnasneta(in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0, planes: int = 44,
              cells: int = 6) -> CifarNet:
    layers: list[nn.Module] = [nn.Conv2d(in_chans, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU()]
    channels = planes
    for width in (planes, 2 * planes, 4 * planes):
        if width != channels:
            layers.append(CellA(channels, width, stride=2))
        layers.extend(CellA(width, width) for _ in range(cells))
        channels = width
    return CifarNet(nn.Sequential(*layers), channels, num_classes, drop_rate)


@register_model
def pnasneta_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """PNASNet-A (44 planes, 6 cells per stage) for 32x32 inputs (paper: 0.13M parameters)."""
    return finish(_pnasneta(**check_entry_kwargs("pnasneta_cifar", pretrained, kwargs)), "pnasneta_cifar",
                  "features.0", "head.fc")
