"""Whole-model train step with each CPU path choice of ``ndeconv.functional`` on and off, in one process.

    python bench/probes/paths.py [--model vgg11_cifar] [--preset fast] [--repeat 8]

Timings across invocations move 5-20% on a small CPU, so the code paths are compared inside one
process, alternating: ``new`` (the defaults: strip covariance, Newton-Schulz path by size),
``matrix-nograd`` (the matrix iteration whenever no gradient is needed), ``no-strips`` (one
product for the covariance) and ``old`` (both of those, and ``eigh`` at every size when a gradient
is needed). Median train step (forward, backward, SGD) of the cifar10 recipe's ND model, batch 128.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from network import build, train_step  # noqa: E402

from ndeconv import _autograd as AG  # noqa: E402

CONFIGS = {
    "new": (AG.SPECTRAL_MIN_F, AG.GRAM_STRIP),
    "matrix-nograd": ({True: AG.SPECTRAL_MIN_F[True], False: 10**9}, AG.GRAM_STRIP),
    "no-strips": (AG.SPECTRAL_MIN_F, 10**9),
    "old": ({True: 1, False: 10**9}, 10**9),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg11_cifar")
    parser.add_argument("--preset", default=None, help="the model's model.deconv.preset (default: the paper's)")
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    model = build(args.model, "deconv", {"model.deconv.preset": args.preset} if args.preset else {},
                  torch.device("cpu"))
    step = train_step(model, x, y, lambda: None)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeat):
        for name, (spectral_min_f, gram_strip) in CONFIGS.items():
            AG.SPECTRAL_MIN_F, AG.GRAM_STRIP = spectral_min_f, gram_strip
            step()  # warm up this configuration
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    for name, bucket in times.items():
        print(f"{args.model:<16s} {args.preset or 'paper':<8s} {name:<14s} {statistics.median(bucket) * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
