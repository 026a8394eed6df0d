"""What trains at a small batch: a plain SGD loop over a fixed CIFAR-10 subset, one setting per run.

    python bench/probes/small_batch_steps.py --data ../shared/data/cifar10 --model resnet18_cifar \
        --batch 2 --steps 1250 --lr 0.0125 [--norm deconv|bn|gn|none] [key=value ...]

The ``key=value`` pairs are ``model.deconv`` settings of the cifar10 recipe (``preset=fast
block_fc=0``), which builds the model as a training run does. The loop is deliberately bare (no
augmentation, a constant rate, SGD momentum 0.9, weight decay 1e-3, the recipe's PyTorch
default initialisation, seed 0) so that two settings differ in the layer only. It prints the mean
training loss of each eighth of the run (ln 10 = 2.30 is chance), the gradient norm and the largest
logit of its last step, and at the end the accuracy on the first 1,000 test images of a fixed
shuffle in eval mode (running estimates) and in training mode (each batch's own statistics, at the
training batch size, 400 images).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ndeconv.data import decode_image
from ndeconv.recipe import DataSpec, load_recipe
from ndeconv.rundir import build_model


def load(data: Path, split: str, n: int, spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of ``split`` (a fixed shuffle: the parquet files are sorted by label), normalised
    with the recipe's mean and standard deviation."""
    frame = pd.concat([pd.read_parquet(f) for f in sorted(data.glob(f"{split}*.parquet"))])
    frame = frame.iloc[np.random.default_rng(0).permutation(len(frame))[:n]]
    x = np.stack([decode_image(d, 3, 32).transpose(1, 2, 0) for d in frame["img"]]).astype(np.float32) / 255
    x = ((x - np.array(spec.mean)) / np.array(spec.std)).astype(np.float32)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(frame["label"].values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="resnet18_cifar")
    parser.add_argument("--norm", default="deconv", choices=["deconv", "bn", "gn", "none"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1250)
    parser.add_argument("--lr", type=float, default=0.0125)
    parser.add_argument("--train-size", type=int, default=2500)
    parser.add_argument("settings", nargs="*", help="model.deconv settings, key=value")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.settings)
    recipe = load_recipe("cifar10", {"model.name": args.model, "model.norm": args.norm,
                                     **{f"model.deconv.{k}": v for k, v in settings.items()}})

    torch.manual_seed(0)
    x_train, y_train = load(args.data, "train", args.train_size, recipe.data)
    x_test, y_test = load(args.data, "test", 1000, recipe.data)
    model = build_model(recipe)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-3)
    order = torch.randperm(args.train_size, generator=torch.Generator().manual_seed(0))
    model.train()
    losses, start, part = [], time.perf_counter(), max(args.steps // 8, 1)
    for step in range(args.steps):
        first = (step * args.batch) % args.train_size
        index = order[first:first + args.batch]
        logits = model(x_train[index])
        loss = F.cross_entropy(logits, y_train[index])
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                          if p.grad is not None]))
        opt.step()
        losses.append(loss.item())
        if (step + 1) % part == 0:
            print(f"step {step + 1} loss {np.mean(losses[-part:]):.3f} grad norm {grad_norm:.2f} "
                  f"max |logit| {logits.abs().max():.1f}", flush=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        model.eval()
        eval_acc = sum((model(x_test[i:i + 200]).argmax(1) == y_test[i:i + 200]).sum().item()
                       for i in range(0, 1000, 200)) / 10
        model.train()  # batch statistics at the training batch size (running estimates move; not used after)
        train_acc = sum((model(x_test[i:i + args.batch]).argmax(1) == y_test[i:i + args.batch]).sum().item()
                        for i in range(0, 400, args.batch)) / 4
    print(f"{args.model} {args.norm} {settings} batch {args.batch} lr {args.lr}: eval-mode accuracy {eval_acc:.1f}%, "
          f"train-mode {train_acc:.1f}% ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
