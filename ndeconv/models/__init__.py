"""The paper's CIFAR architectures, registered in timm's model registry on import.

After ``import ndeconv``, ``timm.create_model("resnet18_cifar", num_classes=10)`` works and
``timm.list_models("*_cifar")`` lists them.
"""

from . import densenet, dpn, mobile, pnasnet, resnet, simple, speedrun, vgg
from ._common import CIFAR_MEAN, CIFAR_STD, PAPER_STEM

CIFAR_MODELS = (
    "vgg11_cifar",
    "vgg16_cifar",
    "resnet18_cifar",
    "preactresnet18_cifar",
    "densenet121_cifar",
    "resnext29_32x4d_cifar",
    "mobilenetv2_cifar",
    "dpn92_cifar",
    "pnasneta_cifar",
    "senet18_cifar",
    "efficientnetb0_cifar",
)

# Parameter counts (millions, 10 classes) that the paper reports for its CIFAR models.
PAPER_PARAMS_M = {
    "vgg16_cifar": 14.71,
    "resnet18_cifar": 11.17,
    "preactresnet18_cifar": 11.17,
    "densenet121_cifar": 6.88,
    "resnext29_32x4d_cifar": 4.76,
    "mobilenetv2_cifar": 2.28,
    "dpn92_cifar": 34.18,
    "pnasneta_cifar": 0.13,
    "senet18_cifar": 11.26,
    "efficientnetb0_cifar": 2.91,
}

__all__ = ["CIFAR_MODELS", "PAPER_PARAMS_M", "PAPER_STEM", "CIFAR_MEAN", "CIFAR_STD", "densenet", "dpn", "mobile",
           "pnasnet", "resnet", "simple", "speedrun", "vgg"]
