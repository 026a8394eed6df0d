"""Inference and torch.compile speed of a deconvolution network.

    python bench/deploy.py [--model resnet18_cifar] [--batch 64] [--repeat 10] [--compile]

Eval forward, in one interleaved run: the BN model, the same model deconvolved (unfused, eval
fold cached), and ``ndeconv.fuse`` of it. With ``--compile`` also a training step and the eval
forward of the deconvolved model eager vs ``torch.compile``.
"""

from __future__ import annotations

import argparse
import copy

import timm
import torch

import ndeconv
from layer import paired_median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18_cifar")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    bn = timm.create_model(args.model, num_classes=10)
    deconv = ndeconv.deconvolve(copy.deepcopy(bn))
    with torch.no_grad():
        bn.train()(x)
        deconv.train()(x)
    bn.eval(), deconv.eval()
    fused = ndeconv.fuse(deconv)

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)
        return run

    t_bn, t_deconv, t_fused = paired_median_seconds([forward(bn), forward(deconv), forward(fused)], args.repeat)
    print(f"{args.model} eval forward, batch {args.batch}, {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads (median of {args.repeat}):")
    print(f"  BN          {t_bn * 1e3:8.1f} ms")
    print(f"  deconv      {t_deconv * 1e3:8.1f} ms  ({t_deconv / t_bn:.2f}x BN)")
    print(f"  fused       {t_fused * 1e3:8.1f} ms  ({t_fused / t_bn:.2f}x BN)")
    if not args.compile:
        return
    y = torch.randint(0, 10, (args.batch,))
    train_model = ndeconv.deconvolve(timm.create_model(args.model, num_classes=10))
    compiled_train = torch.compile(copy.deepcopy(train_model))

    def step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def run():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    eager_eval, compiled_eval = forward(deconv), forward(torch.compile(copy.deepcopy(deconv)))
    t_eager, t_compiled = paired_median_seconds([step(train_model.train()), step(compiled_train.train())],
                                                args.repeat)
    print(f"  train step  eager {t_eager * 1e3:8.1f} ms   compiled {t_compiled * 1e3:8.1f} ms "
          f"({t_eager / t_compiled:.2f}x)")
    t_eager, t_compiled = paired_median_seconds([eager_eval, compiled_eval], args.repeat)
    print(f"  eval        eager {t_eager * 1e3:8.1f} ms   compiled {t_compiled * 1e3:8.1f} ms "
          f"({t_eager / t_compiled:.2f}x)")


if __name__ == "__main__":
    main()
