"""Data throughput: images/s of a recipe's training loader (cache + per-batch augmentation) vs the model.

    python bench/data.py cifar10 --data ../shared/data/cifar10 [--model vgg11_cifar] [--batches 100]

Reports the loader alone (decode cache already built; the first run builds it and reports that
time too) and a forward+backward step of the model at the same batch size, so the two can be
compared: the loader must be much faster than the model for data never to starve it.
"""

from __future__ import annotations

import argparse
import time

import torch

from ndeconv.data import make_dataloaders
from ndeconv.recipe import load_recipe
from ndeconv.rundir import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--norm", default="deconv")
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    overrides = {"model.norm": args.norm}
    if args.data:
        overrides["data.path"] = args.data
    if args.model:
        overrides["model.name"] = args.model
    recipe = load_recipe(args.recipe, overrides)

    start = time.perf_counter()
    dls = make_dataloaders(recipe, device="cpu")
    print(f"loaders ready (decode or cache load): {time.perf_counter() - start:.1f} s")

    n, start = 0, time.perf_counter()
    for i, (xb, _) in enumerate(dls.train):
        n += len(xb)
        if i + 1 == args.batches:
            break
    loader_rate = n / (time.perf_counter() - start)
    print(f"training loader with augmentation: {loader_rate:,.0f} images/s ({n} images)")

    model = build_model(recipe).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    xb, yb = dls.train.one_batch()
    steps = 5
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model_rate = steps * len(xb) / (time.perf_counter() - start)
    print(f"{recipe.model.name} ({recipe.model.norm}) train step: {model_rate:,.0f} images/s")
    print(f"loader / model: {loader_rate / model_rate:.0f}x")


if __name__ == "__main__":
    main()
