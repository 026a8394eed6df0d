"""Which conv layers are short of samples for their covariance at a given batch size.

    python bench/short_layers.py [--models vgg11_cifar,...] [--batch 128,32,8,2]
                                 [--ranks --data ../shared/data/cifar10]

For each model (default: the paper's 11 CIFAR models, deconvolved with the paper's settings) and
batch size, counts the deconvolution conv layers whose samples at the sampling stride (images x
sampled positions x column groups, measured on the inputs each layer really sees for one 32x32
image) are fewer than their covariance's width: the layers where ``model.deconv.small_batch``
samples every position and, still short, shrinks the covariance. No timing.

``--ranks`` prints, per model, a table of every conv layer's covariance at each batch size on
real test images (``--data``; the model as initialised, in training mode): its width ``f``, the
samples ``m`` the layer takes (after the small-batch fallback to every position), the numerical
rank of the sample covariance (mean over column groups; at most ``min(m - 1, f)``) and the
shrinkage intensity towards the diagonal it then gets (0: none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
import torch

import ndeconv
from ndeconv import functional as DF
from ndeconv.models import CIFAR_MODELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedrun_plain import load_split  # noqa: E402


def _padding(layer: ndeconv.FastDeconv) -> tuple[int, ...]:
    return (0, 0) if isinstance(layer.padding, str) else layer.padding


def _each_layer(model: torch.nn.Module, images: torch.Tensor, measure) -> dict:
    """``{layer path: measure(layer, its input)}`` for every conv deconvolution layer, from one
    training-mode forward of ``images``."""
    found = {}
    hooks = [layer.register_forward_pre_hook(lambda m, args, p=path: found.__setitem__(p, measure(m, args[0])))
             for path, layer in model.named_modules() if isinstance(layer, ndeconv.FastDeconv)]
    with torch.no_grad():
        model.train()(images)
    for hook in hooks:
        hook.remove()
    return found


def samples_per_image(model: torch.nn.Module, size: int = 32) -> dict[str, tuple[int, int]]:
    """``{layer path: (samples one image gives at the sampling stride, covariance width)}``."""
    def count(layer, x):
        samples = layer._patch_samples(x[:1], _padding(layer), layer.sampling_stride)
        return samples.shape[1], samples.shape[2]
    return _each_layer(model, torch.randn(2, 3, size, size), count)


def layer_ranks(model: torch.nn.Module, images: torch.Tensor) -> dict[str, tuple[int, int, float, float]]:
    """``{layer path: (f, m, rank, shrinkage)}`` of each conv deconvolution layer's batch covariance on
    ``images`` (the samples the layer takes, rank and intensity as means over column groups)."""
    def record(layer, x):
        samples = layer._batch_samples(x, _padding(layer)).double()
        _, cov = DF.whitening_stats(samples, 0.0)
        _, m, f = samples.shape
        rank = torch.linalg.matrix_rank(cov).double().mean().item()
        shrink = DF.diagonal_shrinkage(samples).mean().item() if layer.small_batch and m < f else 0.0
        return f, m, rank, shrink
    return _each_layer(model, images, record)


def print_ranks(name: str, batches: list[int], images: torch.Tensor) -> None:
    """One table for ``name``: a row per conv layer, a column per batch size."""
    torch.manual_seed(0)
    model = ndeconv.deconvolve(timm.create_model(name, num_classes=10))
    per_batch = [layer_ranks(model, images[:b]) for b in batches]
    print(f"\n**{name}**: covariance rank / width (samples m, shrinkage intensity) per conv layer\n")
    print("| layer | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for path in per_batch[0]:
        cells = []
        for ranks in per_batch:
            f, m, rank, shrink = ranks[path]
            cells.append(f"{rank:.0f}/{f} (m {m}" + (f", {shrink:.2f})" if shrink else ")"))
        print(f"| {path} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CIFAR_MODELS))
    parser.add_argument("--batch", default="128,32,8,2", help="comma-separated batch sizes")
    parser.add_argument("--ranks", action="store_true", help="per-layer covariance ranks on real images")
    parser.add_argument("--data", type=Path, help="CIFAR-10 parquet directory (for --ranks)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    if args.ranks:
        if args.data is None:
            parser.error("--ranks needs --data")
        test_images = load_split(args.data / "test.parquet")[0]
        pick = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))[:max(batches)]
        images = test_images[pick]
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            print_ranks(name, batches, images)
        return
    print("| model | conv layers | " + " | ".join(f"short at batch {b}" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        counts = samples_per_image(ndeconv.deconvolve(timm.create_model(name, num_classes=10)))
        short = [sum(m * b < f for m, f in counts.values()) for b in batches]
        print(f"| {name} | {len(counts)} | " + " | ".join(map(str, short)) + " |")


if __name__ == "__main__":
    main()
