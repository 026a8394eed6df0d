"""Which conv layers are short of samples for their covariance at a given batch size.

    python bench/short_layers.py [--models vgg11_cifar,...] [--batch 128,32,8,2]

For each model (default: the paper's 11 CIFAR models, deconvolved with the paper's settings) and
batch size, counts the deconvolution conv layers whose samples at the sampling stride (images x
sampled positions x column groups, measured on the inputs each layer really sees for one 32x32
image) are fewer than their covariance's width: the layers where ``model.deconv.small_batch``
samples every position and, still short, shrinks the covariance. No timing.
"""

from __future__ import annotations

import argparse

import timm
import torch

import ndeconv
from ndeconv.models import CIFAR_MODELS


def samples_per_image(model: torch.nn.Module, size: int = 32) -> dict[str, tuple[int, int]]:
    """``{layer path: (samples one image gives at the sampling stride, covariance width)}``."""
    counts: dict[str, tuple[int, int]] = {}
    hooks = []
    for path, layer in model.named_modules():
        if isinstance(layer, ndeconv.FastDeconv):
            def count(module, args, path=path):
                padding = (0, 0) if isinstance(module.padding, str) else module.padding
                samples = module._patch_samples(args[0][:1], padding, module.sampling_stride)
                counts[path] = (samples.shape[1], samples.shape[2])
            hooks.append(layer.register_forward_pre_hook(count))
    with torch.no_grad():
        model.train()(torch.randn(2, 3, size, size))
    for hook in hooks:
        hook.remove()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CIFAR_MODELS))
    parser.add_argument("--batch", default="128,32,8,2", help="comma-separated batch sizes")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    print("| model | conv layers | " + " | ".join(f"short at batch {b}" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        counts = samples_per_image(ndeconv.deconvolve(timm.create_model(name, num_classes=10)))
        short = [sum(m * b < f for m, f in counts.values()) for b in batches]
        print(f"| {name} | {len(counts)} | " + " | ".join(map(str, short)) + " |")


if __name__ == "__main__":
    main()
