"""DPN-92 for CIFAR: dual path blocks (a residual path and a densely growing path)."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import Tensor, nn

from ._common import CifarNet, check_entry_kwargs, finish


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class DualPathBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 to ``out + dense`` channels; the first ``out`` are added to the
    residual path, the last ``dense`` are appended to the dense path."""

    def __init__(self, cin: int, width: int, out: int, dense: int, stride: int, project: bool):
        super().__init__()
        self.out = out
        self.body = nn.Sequential(
            *_conv_bn(cin, width, 1), nn.ReLU(),
            *_conv_bn(width, width, 3, stride, groups=32), nn.ReLU(),
            *_conv_bn(width, out + dense, 1),
        )
        self.shortcut = nn.Sequential(*_conv_bn(cin, out + dense, 1, stride)) if project else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y, x = self.body(x), self.shortcut(x)
        d = self.out
        return self.act(torch.cat([x[:, :d] + y[:, :d], x[:, d:], y[:, d:]], 1))


def _dpn92(in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0) -> CifarNet:
    layers: list[nn.Module] = [*_conv_bn(in_chans, 64, 3), nn.ReLU()]
    channels = 64
    stages = zip((96, 192, 384, 768), (256, 512, 1024, 2048), (3, 4, 20, 3), (16, 32, 24, 128), (1, 2, 2, 2))
    for width, out, blocks, dense, stride in stages:
        for i in range(blocks):
            layers.append(DualPathBlock(channels, width, out, dense, stride if i == 0 else 1, project=i == 0))
            channels = out + (i + 2) * dense
    return CifarNet(nn.Sequential(*layers), channels, num_classes, drop_rate)


@register_model
def dpn92_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """DPN-92 with a 3x3 stem for 32x32 inputs (paper: 34.18M parameters)."""
    return finish(_dpn92(**check_entry_kwargs("dpn92_cifar", pretrained, kwargs)), "dpn92_cifar",
                  "features.0", "head.fc")
