"""Which normaliser at small batches: BN, GroupNorm, deconvolution and none, at equal training time
or for the same epochs.

    python bench/small_batch.py --data ../shared/data/cifar10 [--models vgg11_cifar,resnet18_cifar]
                                [--batch 2,8] [--budget 90s | --epochs 1] [--limit-train 10000]
                                [--recipe cifar10] [--base-lr 0.1] [--base-batch 128] [--goal 3]
                                [--grid deconv:model.deconv.preset=paper,fast] [--seed 0] [--out runs/small-batch]
    python bench/small_batch.py --recipe digit_canvas --models resnet18 --base-lr 0.05 --base-batch 32 \
                                --epochs 1 --limit-train 0 --out runs/small-batch-seg

For each model and batch size, trains every norm (``--norms``) for the time budget (or the
epochs) at each learning rate of a small grid scaled from the recipe's (``--base-lr`` at
``--base-batch``: ``lr b / base``, linear scaling, and ``lr sqrt(b / base)``), seed ``--seed``, one run
at a time, as ``ndeconv compare`` does (its output directories are ordinary comparisons, reused when
they exist). Prints one table per model and batch: each norm's best score (accuracy, or mean IoU
for segmentation) with its rate, optimizer steps and training seconds, and ND's lead over the
best of the others against ``--goal`` points. ``--grid`` adds settings to the grid as ``ndeconv
compare --grid`` takes them (``deconv:model.deconv.preset=paper,fast``: ND with either preset);
each norm's best is then over every setting it trained. Run it on a quiet machine: a budgeted run's step
count comes from timing its first steps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ndeconv.compare import LABEL, lead, parse_grid, run_comparison, setting_rows, write_outputs
from ndeconv.recipe import load_recipe


def rates(batch: int, base: float, base_batch: int) -> list[str]:
    """The learning-rate grid for ``batch``: ``base`` scaled linearly and by the square root."""
    scaled = {base * batch / base_batch, base * math.sqrt(batch / base_batch)}
    return [f"{lr:.4g}" for lr in sorted(scaled)]


def best_per_norm(rows: list[dict]) -> dict[str, dict]:
    """Each norm's best setting among ``setting_rows`` (a diverged setting never counts)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["score"] is not None and r["score"] > best.get(r["norm"], {}).get("score", -1.0):
            best[r["norm"]] = r
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="local data (default: the recipe's source)")
    parser.add_argument("--recipe", default="cifar10")
    parser.add_argument("--models", default="vgg11_cifar,resnet18_cifar")
    parser.add_argument("--batch", default="2,8", help="comma-separated batch sizes")
    parser.add_argument("--norms", default="bn,gn,deconv,none")
    parser.add_argument("--budget", default="90s", help="the training time of every run")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of a time budget")
    parser.add_argument("--limit-train", type=int, default=10000, help="fixed training subset (0: all)")
    parser.add_argument("--base-lr", type=float, default=0.1, help="the learning rate at --base-batch")
    parser.add_argument("--base-batch", type=int, default=128)
    parser.add_argument("--goal", type=float, default=3.0, help="ND's lead over the best other norm, in points")
    parser.add_argument("--grid", action="append", default=[], help="more grid settings, as compare's --grid")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every run (its own output folders)")
    parser.add_argument("--out", type=Path, default=Path("runs/small-batch"))
    args = parser.parse_args()

    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    length = f"{args.epochs} epoch(s)" if args.epochs else args.budget
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for batch in [int(b) for b in args.batch.split(",") if b.strip()]:
            overrides = {"train.limit_train": args.limit_train or None, "train.batch_size": batch,
                         "train.seed": args.seed}
            if args.data is not None:
                overrides["data.path"] = str(args.data.expanduser().resolve())
            recipe = load_recipe(args.recipe, overrides)
            grid = rates(batch, args.base_lr, args.base_batch)
            out = args.out / (f"{model}-batch{batch}" + (f"-seed{args.seed}" if args.seed else ""))
            cells = run_comparison(recipe, [model], [args.epochs] if args.epochs else [], out, progress=False,
                                   norms=norms, grid=parse_grid([f"optim.lr={','.join(grid)}", *args.grid]),
                                   time_budgets=[] if args.epochs else [args.budget])
            write_outputs(cells, [args.epochs] if args.epochs else [], out,
                          f"{model} at batch {batch}: every norm, {length}")
            best = best_per_norm(setting_rows(cells))
            print(f"\n{model}, batch {batch}, {length}, seed {args.seed} (lr grid {', '.join(grid)})")
            print("| norm | score | lr | steps | training s |")
            print("|---|---|---|---|---|")
            for norm in norms:
                r = best.get(LABEL[norm])
                print(f"| {LABEL[norm]} | " + ("diverged | - | - | - |" if r is None else
                                               f"{r['score']:.2f} | {r['setting']} | {r['steps']} | "
                                               f"{r['train_seconds']:.1f} |"))
            ahead = lead({name: r["score"] for name, r in best.items()})
            verdict = "-" if ahead is None else f"{ahead:+.2f} ({'met' if ahead >= args.goal else 'not met'})"
            print(f"ND - best other: {verdict}, goal +{args.goal:g}", flush=True)


if __name__ == "__main__":
    main()
