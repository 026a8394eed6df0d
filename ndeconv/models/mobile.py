"""MobileNetV2 and EfficientNet-B0 for CIFAR, from timm's EfficientNet blocks and builder."""

from __future__ import annotations

from timm.models import register_model
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet
from torch import nn

from ._common import check_entry_kwargs, finish

# Stage 2 runs at stride 1 (not 2) for 32x32 inputs, as in the paper's CIFAR code.
_MOBILENETV2 = [
    ["ds_r1_k3_s1_c16"], ["ir_r2_k3_s1_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
    ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"],
]
# B0's stages and kernels; the paper's CIFAR EfficientNet has no squeeze-excitation and no 1x1 head conv.
_EFFICIENTNET_B0 = [
    ["ds_r1_k3_s1_e1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r2_k5_s2_e6_c40"], ["ir_r3_k3_s2_e6_c80"],
    ["ir_r3_k5_s1_e6_c112"], ["ir_r4_k5_s2_e6_c192"], ["ir_r1_k3_s1_e6_c320"],
]


def _stride1_stem(model: EfficientNet) -> EfficientNet:
    model.conv_stem.stride = (1, 1)
    return model


@register_model
def mobilenetv2_cifar(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV2 (ReLU6, 1280-wide head) with a stride-1 stem (paper: 2.28M parameters)."""
    kwargs = check_entry_kwargs("mobilenetv2_cifar", pretrained, kwargs)
    kwargs.setdefault("num_classes", 10)
    model = EfficientNet(decode_arch_def(_MOBILENETV2), stem_size=32, num_features=1280, act_layer=nn.ReLU6,
                         fix_stem=True, **kwargs)
    return finish(_stride1_stem(model), "mobilenetv2_cifar", "conv_stem", "classifier")


@register_model
def efficientnetb0_cifar(pretrained: bool = False, **kwargs) -> EfficientNet:
    """EfficientNet-B0 stages (SiLU) with a stride-1 stem, classifier on the 320 final channels (paper: 2.91M)."""
    kwargs = check_entry_kwargs("efficientnetb0_cifar", pretrained, kwargs)
    num_classes = kwargs.pop("num_classes", 10)
    model = EfficientNet(decode_arch_def(_EFFICIENTNET_B0), stem_size=32, fix_stem=True, num_classes=num_classes,
                         **kwargs)
    model.conv_head, model.bn2 = nn.Identity(), nn.Identity()
    model.num_features = model.head_hidden_size = 320
    model.reset_classifier(num_classes)
    return finish(_stride1_stem(model), "efficientnetb0_cifar", "conv_stem", "classifier")
