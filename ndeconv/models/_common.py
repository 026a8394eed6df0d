"""Shared pieces of the CIFAR models: config, timm-style head, stem surgery for 32x32 inputs."""

from __future__ import annotations

from typing import Any

from timm.layers import ClassifierHead
from torch import Tensor, nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

#: First-layer deconvolution settings where the paper's code differs from the defaults (the
#: other architectures use ``n_iter`` and never freeze): VGG whitens its 3-channel input with
#: 15 Newton-Schulz steps and freezes that estimate after 100 training steps. Reaches
#: :func:`ndeconv.deconvolve` through ``pretrained_cfg["deconv_stem"]``.
PAPER_STEM: dict[str, dict[str, int]] = {
    "vgg11_cifar": {"n_iter": 15, "freeze_iter": 100},
    "vgg16_cifar": {"n_iter": 15, "freeze_iter": 100},
}


def cifar_cfg(**overrides: Any) -> dict[str, Any]:
    """timm-style ``pretrained_cfg`` for a 32x32 model (no weights are distributed)."""
    cfg = dict(
        url="", num_classes=10, input_size=(3, 32, 32), pool_size=None, crop_pct=1.0, interpolation="bilinear",
        mean=CIFAR_MEAN, std=CIFAR_STD, first_conv="", classifier="",
    )
    cfg.update(overrides)
    return cfg


def check_entry_kwargs(name: str, pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop timm's pretrained-cfg plumbing; refuse ``pretrained=True`` (no published weights)."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; create it with pretrained=False")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


def finish(model: nn.Module, name: str, first_conv: str, classifier: str) -> nn.Module:
    """Attach the timm-style config to a built model."""
    model.pretrained_cfg = model.default_cfg = cifar_cfg(
        architecture=name, first_conv=first_conv, classifier=classifier,
        num_classes=getattr(model, "num_classes", 10), deconv_stem=dict(PAPER_STEM.get(name, {})),
    )
    return model


class CifarNet(nn.Module):
    """``features -> global average pool -> linear``, with timm's classifier interface."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int = 10, drop_rate: float = 0.0):
        super().__init__()
        self.num_classes, self.num_features, self.drop_rate = num_classes, num_features, drop_rate
        self.features = features
        self.head = ClassifierHead(num_features, num_classes, pool_type="avg", drop_rate=drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
