"""The accuracy-per-second goal as a benchmark: at every training-time budget, ND's best beats BN's best.

    python bench/equal_time.py --data ../shared/data/cifar10 [--model vgg11_cifar] [--limit-train 10000]
                               [--budget 90s,5m,10m,20m] [--bn-lr 0.1,0.03,0.01,0.003]
                               [--nd model.deconv.preset=paper,fast] [--goal 3] [--out runs/equal-time]

Trains (or reuses, as ``ndeconv compare`` does) every cell of the equal-time comparison: BN at each
``--bn-lr``, ND at each value of each ``--nd`` key (default: the recipe's own settings, the
paper's), each for every budget, one run at a time; then prints, per budget, each norm's best accuracy with its setting, steps and measured
training seconds, ND's lead in points and whether it meets ``--goal``. The output directory is
an ordinary comparison (``table.md``, ``table.csv``, ``curves.png``), so cells already trained by
``ndeconv compare --budget ...`` into it are reused. The exit status is 0 whether or not the goal
is met; the last line says how many budgets met it. Run it on a quiet machine: every cell's step
count comes from timing its first steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ndeconv.compare import equal_time_rows, parse_grid, run_comparison, write_outputs
from ndeconv.recipe import load_recipe, parse_budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cifar10")
    parser.add_argument("--model", default="vgg11_cifar")
    parser.add_argument("--data", type=Path, help="local data (default: the recipe's source)")
    parser.add_argument("--limit-train", type=int, default=10000, help="fixed training subset (0: all)")
    parser.add_argument("--budget", default="90s,5m,10m,20m", help="comma-separated training-time budgets")
    parser.add_argument("--bn-lr", default="0.1,0.03,0.01,0.003", help="BN's learning rates; its best one counts")
    parser.add_argument("--nd", action="append", default=[], metavar="KEY=V1,V2",
                        help="ND's settings to try (repeatable); its best one counts")
    parser.add_argument("--goal", type=float, default=3.0, help="ND's lead over BN's best to meet, in points")
    parser.add_argument("--out", type=Path, default=Path("runs/equal-time"))
    args = parser.parse_args()

    overrides = {"train.limit_train": args.limit_train or None}
    if args.data is not None:
        overrides["data.path"] = str(args.data.expanduser().resolve())
    recipe = load_recipe(args.recipe, overrides)
    budgets = [b.strip() for b in args.budget.split(",") if b.strip()]
    cells = run_comparison(recipe, [args.model], [], args.out, progress=False,
                           grid=parse_grid([f"bn:optim.lr={args.bn_lr}", *(f"deconv:{g}" for g in args.nd)]),
                           time_budgets=budgets)
    subset = f", {recipe.train.limit_train} training images" if recipe.train.limit_train else ""
    write_outputs(cells, [], args.out, f"{recipe.name}: BN vs ND at equal training time{subset}")

    print(f"| budget | BN best | BN setting, steps, s | ND | ND steps, s | ND - BN | goal +{args.goal:g} |")
    print("|---|---|---|---|---|---|---|")
    met = 0
    for row in sorted(equal_time_rows(cells), key=lambda r: parse_budget(r["budget"])):
        lead = row["lead"]
        ok = lead is not None and lead >= args.goal
        met += ok
        print(f"| {row['budget']} | {row.get('BN', '-')} | {row.get('BN_setting', '-')}, {row.get('BN_steps', '-')}, "
              f"{row.get('BN_seconds', '-')} | {row.get('ND', '-')} | {row.get('ND_steps', '-')}, "
              f"{row.get('ND_seconds', '-')} | {'-' if lead is None else f'{lead:+.2f}'} | "
              f"{'met' if ok else 'not met'} |")
    print(f"goal met at {met} of {len(budgets)} budgets ({args.model}, {args.out})")


if __name__ == "__main__":
    main()
