"""ResNet-18, ResNeXt-29 (32x4d), PreAct ResNet-18 and SENet-18 for CIFAR."""

from __future__ import annotations

from timm.layers import SEModule
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn

from ._common import CifarNet, check_entry_kwargs, finish


def _cifar_stem(model: ResNet, in_chans: int) -> ResNet:
    """3x3 stride-1 stem and no max pool: 32x32 inputs keep their resolution in stage 1."""
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 (timm's BasicBlock) with a CIFAR stem (paper: 11.17M parameters)."""
    kwargs = check_entry_kwargs("resnet18_cifar", pretrained, kwargs)
    kwargs.setdefault("num_classes", 10)
    model = _cifar_stem(ResNet(BasicBlock, [2, 2, 2, 2], **kwargs), kwargs.get("in_chans", 3))
    return finish(model, "resnet18_cifar", "conv1", "fc")


def _resnext29(in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0) -> CifarNet:
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    inplanes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2)):
        for s in (stride, 1, 1):
            downsample = None
            if s != 1 or inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, s, bias=False),
                    nn.BatchNorm2d(planes * Bottleneck.expansion),
                )
            layers.append(Bottleneck(inplanes, planes, s, downsample, cardinality=32, base_width=4))
            inplanes = planes * Bottleneck.expansion
    return CifarNet(nn.Sequential(*layers), inplanes, num_classes, drop_rate)


@register_model
def resnext29_32x4d_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """ResNeXt-29 32x4d: three stages of three timm Bottlenecks, cardinality 32 (paper: 4.76M)."""
    model = _resnext29(**check_entry_kwargs("resnext29_32x4d_cifar", pretrained, kwargs))
    return finish(model, "resnext29_32x4d_cifar", "features.0", "head.fc")


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, identity or 1x1-conv shortcut taken after the first BN-ReLU;
    optionally squeeze-excitation on the residual (SENet)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, se: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.act = nn.ReLU()
        self.se = SEModule(planes, rd_channels=planes // 16) if se else nn.Identity()
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return self.se(out) + shortcut


def _preact_resnet18(se: bool, in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0) -> CifarNet:
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 64, 3, padding=1, bias=False)]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for s in (stride, 1):
            layers.append(PreActBlock(in_planes, planes, s, se=se))
            in_planes = planes
    return CifarNet(nn.Sequential(*layers), in_planes, num_classes, drop_rate)


@register_model
def preactresnet18_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """Pre-activation ResNet-18 for CIFAR (paper: 11.17M parameters)."""
    model = _preact_resnet18(False, **check_entry_kwargs("preactresnet18_cifar", pretrained, kwargs))
    return finish(model, "preactresnet18_cifar", "features.0", "head.fc")


@register_model
def senet18_cifar(pretrained: bool = False, **kwargs) -> CifarNet:
    """SENet-18: PreAct ResNet-18 with timm's squeeze-excitation, reduction 16 (paper: 11.26M)."""
    model = _preact_resnet18(True, **check_entry_kwargs("senet18_cifar", pretrained, kwargs))
    return finish(model, "senet18_cifar", "features.0", "head.fc")
