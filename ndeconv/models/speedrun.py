"""The CIFAR-10 speed-record network (``airbench94``): a data-fitted patch-whitening stem, three
conv-pool-BN-GELU blocks and a linear head, as the published fastest recipe describes it."""

from __future__ import annotations

from timm.models import register_model
from torch import Tensor, nn

from ..layers import PatchWhitening
from ._common import check_entry_kwargs, cifar_cfg

#: Output scale of the head (the logits are multiplied by it).
HEAD_SCALE = 1 / 9


def _norm(channels: int) -> nn.BatchNorm2d:
    """BN with eps 1e-12, running averages that weigh the new batch 0.4, and its scale frozen at 1
    (only the shift trains)."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 "same" conv without bias whose first ``in_channels`` filters start as the identity (a
    Dirac delta on their own input channel); the rest keep PyTorch's default initialisation."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Sequential):
    """conv, 2x2 max-pool, BN, GELU, conv, BN, GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(identity_conv(in_channels, out_channels), nn.MaxPool2d(2), _norm(out_channels), nn.GELU(),
                         identity_conv(out_channels, out_channels), _norm(out_channels), nn.GELU())


class SpeedrunNet(nn.Module):
    """Patch-whitening stem (2x2, ``2 * 12`` filters), GELU, three :class:`ConvGroup` (64, 256, 256
    channels), 3x3 max-pool, a linear head without bias whose output is scaled by 1/9; timm's
    classifier interface."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, widths: tuple[int, ...] = (64, 256, 256),
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.num_features, self.drop_rate = num_classes, widths[-1], drop_rate
        self.stem = PatchWhitening(in_chans, 2, eps=5e-4, bias_epochs=3)
        channels = [self.stem.out_channels, *widths]
        self.features = nn.Sequential(nn.GELU(), *[ConvGroup(a, b) for a, b in zip(channels[:-1], channels[1:])],
                                      nn.MaxPool2d(3))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str = "") -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, bias=False)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = nn.functional.dropout(x.flatten(1), self.drop_rate, self.training)
        return x if pre_logits else self.head(x) * HEAD_SCALE

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def airbench94(pretrained: bool = False, **kwargs) -> SpeedrunNet:
    """The CIFAR-10 speed-record network (94% in about 4 s on an A100 with its recipe,
    ``cifar10_speedrun``). Its stem is fitted to training images before training (``ndeconv train``
    does it; by hand: ``model.stem.fit(images)``)."""
    model = SpeedrunNet(**check_entry_kwargs("airbench94", pretrained, kwargs))
    model.pretrained_cfg = model.default_cfg = cifar_cfg(architecture="airbench94", first_conv="stem",
                                                         classifier="head", num_classes=model.num_classes,
                                                         deconv_stem={})
    return model
