"""Which normaliser at small batches: BN, GroupNorm, deconvolution and none, at equal training time.

    python bench/small_batch.py --data ../shared/data/cifar10 [--models vgg11_cifar,resnet18_cifar]
                                [--batch 2,8] [--budget 90s] [--limit-train 10000] [--goal 3]
                                [--out runs/small-batch]

For each model and batch size, trains every norm (``--norms``) for the time budget at each
learning rate of a small grid scaled from the recipe's batch of 128 (``0.1 b/128``, linear
scaling, and ``0.1 sqrt(b/128)``), one run at a time, as ``ndeconv compare`` does (its output
directories are ordinary comparisons, reused when they exist). Prints one table per model and
batch: each norm's best accuracy with its rate, optimizer steps and measured training seconds,
and ND's lead over the best of the others, against ``--goal`` points. Run it on a quiet machine:
every run's step count comes from timing its first steps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ndeconv.compare import LABEL, equal_time_rows, parse_grid, run_comparison, write_outputs
from ndeconv.recipe import load_recipe


def rates(batch: int, base: float = 0.1, base_batch: int = 128) -> list[str]:
    """The learning-rate grid for ``batch``: ``base`` scaled linearly and by the square root."""
    scaled = {base * batch / base_batch, base * math.sqrt(batch / base_batch)}
    return [f"{lr:.4g}" for lr in sorted(scaled)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", default="vgg11_cifar,resnet18_cifar")
    parser.add_argument("--batch", default="2,8", help="comma-separated batch sizes")
    parser.add_argument("--norms", default="bn,gn,deconv,none")
    parser.add_argument("--budget", default="90s", help="the training time of every run")
    parser.add_argument("--limit-train", type=int, default=10000, help="fixed training subset (0: all)")
    parser.add_argument("--goal", type=float, default=3.0, help="ND's lead over the best other norm, in points")
    parser.add_argument("--out", type=Path, default=Path("runs/small-batch"))
    args = parser.parse_args()

    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for batch in [int(b) for b in args.batch.split(",") if b.strip()]:
            recipe = load_recipe("cifar10", {"data.path": str(args.data.expanduser().resolve()),
                                             "train.limit_train": args.limit_train or None,
                                             "train.batch_size": batch, "train.seed": 0})
            out = args.out / f"{model}-batch{batch}"
            cells = run_comparison(recipe, [model], [], out, progress=False, norms=norms,
                                   grid=parse_grid([f"optim.lr={','.join(rates(batch))}"]), time_budgets=[args.budget])
            write_outputs(cells, [], out, f"{model} at batch {batch}: every norm at equal training time")
            row = equal_time_rows(cells)[0]
            print(f"\n{model}, batch {batch}, {args.budget} (lr grid {', '.join(rates(batch))})")
            print("| norm | accuracy | lr | steps | training s |")
            print("|---|---|---|---|---|")
            for norm in norms:
                name = LABEL[norm]
                print(f"| {name} | {row.get(name, 'diverged')} | {row.get(f'{name}_setting', '-')} | "
                      f"{row.get(f'{name}_steps', '-')} | {row.get(f'{name}_seconds', '-')} |")
            lead = row["lead"]
            verdict = "-" if lead is None else f"{lead:+.2f} ({'met' if lead >= args.goal else 'not met'})"
            print(f"ND - best other: {verdict}, goal +{args.goal:g}")


if __name__ == "__main__":
    main()
