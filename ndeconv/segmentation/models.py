"""Segmentation models: torchvision's (FCN, DeepLabv3, LR-ASPP) or a timm backbone with a simple
FCN head; BN or deconvolution through the same registry as the classifiers."""

from __future__ import annotations

import timm
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RecipeError

__all__ = ["FCNHead", "BackboneFCN", "MainOutput", "create_segmentation_model"]

TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_MODELS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                      "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


class FCNHead(nn.Sequential):
    """3x3 conv, BN, ReLU, 1x1 conv to the class scores (the head of torchvision's FCN)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int | None = None):
        hidden = hidden or max(in_channels // 4, 32)
        super().__init__(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                         nn.ReLU(), nn.Conv2d(hidden, num_classes, 1))


class BackboneFCN(nn.Module):
    """A timm backbone's feature map (``features_only``, one level) through :class:`FCNHead`, upsampled
    bilinearly to the input size."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = FCNHead(backbone.feature_info.channels()[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        scores = self.head(self.backbone(x)[-1])
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


class MainOutput(nn.Module):
    """torchvision's segmentation models return ``{"out": ..., "aux": ...}``; this returns ``out``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


def create_segmentation_model(name: str, num_classes: int, in_chans: int = 3, feature_level: int = -1) -> nn.Module:
    """``torchvision:<name>`` (e.g. ``torchvision:fcn_resnet50``, no pretrained weights) or a timm model
    name used as a backbone (its ``feature_level``-th feature map, default the last) with an FCN head."""
    if name.startswith(TORCHVISION_PREFIX):
        from torchvision.models import segmentation

        short = name[len(TORCHVISION_PREFIX):]
        if short not in TORCHVISION_MODELS:
            raise RecipeError(f"model.name: torchvision has no segmentation model '{short}' "
                              f"(known: {', '.join(TORCHVISION_MODELS)})")
        builder = getattr(segmentation, short)
        if in_chans != 3:
            raise RecipeError(f"model.name: {name} takes 3-channel images, data.channels is {in_chans}")
        return MainOutput(builder(weights=None, weights_backbone=None, num_classes=num_classes))
    if not timm.is_model(name):
        raise RecipeError(f"model.name: unknown timm model '{name}' (or torchvision:<segmentation model>)")
    try:
        backbone = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans)
    except (RuntimeError, TypeError, ValueError) as e:
        raise RecipeError(f"model.name: timm cannot build '{name}' as a feature backbone ({e})") from None
    levels = len(backbone.feature_info)
    if not -levels <= feature_level < levels:
        raise RecipeError(f"model.feature_level: {name} has {levels} feature levels, got {feature_level}")
    index = feature_level % levels
    backbone = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans, out_indices=(index,))
    return BackboneFCN(backbone, num_classes)
