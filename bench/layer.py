"""Speed of one deconvolution layer vs conv + BatchNorm.

    python bench/layer.py [--batch 64] [--channels 64] [--size 32] [--repeat 10]

Forward+backward of a 64->64 3x3 layer at batch 64, 32x32 (CPU by default): conv+BN+ReLU vs
FastDeconv+ReLU at the paper's defaults, eval forward of both, and where the deconv time goes.
Reports the median of ``--repeat`` timed runs after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

import ndeconv
from ndeconv import functional as DF


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    return paired_median_seconds([fn], repeat, warmup)[0]


def paired_median_seconds(fns: list[Callable[[], object]], repeat: int, warmup: int = 2) -> list[float]:
    """Median time of each function, run interleaved so that machine noise hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    c = args.channels
    x = torch.randn(args.batch, c, args.size, args.size, device=dev, requires_grad=True)
    bn = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()).to(dev)
    deconv = nn.Sequential(ndeconv.FastDeconv(c, c, 3, padding=1), nn.ReLU()).to(dev)

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            x.grad = None
            model(x).sum().backward()
            sync()
        return run

    def infer(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)
            sync()
        return run

    rows = {}
    rows["train step conv+BN+ReLU"], rows["train step FastDeconv+ReLU"] = paired_median_seconds(
        [step(bn.train()), step(deconv.train())], args.repeat
    )
    rows["eval forward conv+BN+ReLU"], rows["eval forward FastDeconv+ReLU"] = paired_median_seconds(
        [infer(bn.eval()), infer(deconv.eval())], args.repeat
    )

    fast = {
        "stats_grad=False": dict(stats_grad=False),
        "max_samples=2048": dict(max_samples=2048),
        "both": dict(stats_grad=False, max_samples=2048),
    }
    options = [nn.Sequential(ndeconv.FastDeconv(c, c, 3, padding=1, **kw), nn.ReLU()).to(dev) for kw in fast.values()]
    timed = paired_median_seconds([step(bn)] + [step(m) for m in options], args.repeat)
    option_ratios = {name: t / timed[0] for name, t in zip(fast, timed[1:])}

    layer = deconv[0]
    xd = x.detach()
    samples = DF.conv_patch_samples(xd, 3, block=layer.block, padding=1, sampling_stride=layer.sampling_stride)
    mean, cov = DF.whitening_stats(samples, layer.eps)
    parts = {
        "  patches (unfold + regroup)": lambda: DF.conv_patch_samples(
            xd, 3, block=layer.block, padding=1, sampling_stride=layer.sampling_stride
        ),
        "  mean + covariance": lambda: DF.whitening_stats(samples, layer.eps),
        "  Newton-Schulz": lambda: DF.isqrt_newton_schulz(cov, layer.n_iter),
        "  fold into weight": lambda: DF.fold_conv(layer.weight, layer.bias, mean, cov, 1),
        "  the convolution (forward)": lambda: nn.functional.conv2d(xd, layer.weight, layer.bias, padding=1),
    }
    with torch.no_grad():
        for name, fn in parts.items():
            rows[f"{name}"] = median_seconds(lambda fn=fn: (fn(), sync()), args.repeat)

    print(f"device={dev} threads={torch.get_num_threads()} x={tuple(x.shape)} torch={torch.__version__}")
    print(f"FastDeconv defaults: block={layer.block} sampling_stride={layer.sampling_stride} "
          f"n_iter={layer.n_iter} (f={layer.running_deconv.shape[-1]}, samples={samples.shape[1]})")
    for name, seconds in rows.items():
        print(f"{name:<34s} {seconds * 1e3:8.1f} ms")
    train_ratio = rows["train step FastDeconv+ReLU"] / rows["train step conv+BN+ReLU"]
    eval_ratio = rows["eval forward FastDeconv+ReLU"] / rows["eval forward conv+BN+ReLU"]
    print(f"train-step ratio deconv/BN: {train_ratio:.2f}  (goal <= 1.5)")
    print(f"eval ratio deconv/BN:       {eval_ratio:.2f}  (goal <= 1.05)")
    for name, ratio in option_ratios.items():
        print(f"train-step ratio with {name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
