"""The speed-record goal as a benchmark: deconvolution reaches every level from 85% to 94% sooner than BN.

    python bench/speedrun.py --data ../shared/data/cifar10 [--out runs/speedrun] [--seed 0]
                             [--nd KEY=VALUE ...] [--epochs 9.9] [--levels 85,90,92,93,94]

Trains (or reuses, or resumes) the bundled ``cifar10_speedrun`` recipe twice on the full training
set, one run at a time: BN as published, and deconvolution (``model.norm: deconv`` plus the
``--nd`` overrides). Then prints each run's test accuracy with and without test-time augmentation
and its training seconds, the training seconds each needed to first reach every level (validated
at the end of every epoch, so a level counts at the end of the epoch that reached it), and each
norm's accuracy at BN's training time and at half of it (its last validation by then). The last
line says at how many levels ND was first. The exit status is 0 either way. Run it on a quiet
machine: the seconds are the runs' own measured training seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ndeconv.compare import accuracy_curve
from ndeconv.recipe import load_recipe
from ndeconv.rundir import is_finished, read_results
from ndeconv.train import resume, train


def _run(out: Path, overrides: dict[str, str]) -> Path:
    """A finished run of the recipe in ``out``: trained, resumed, or as it is."""
    if out.exists() and any(out.iterdir()):
        if not is_finished(out):
            resume(out)
        return out
    train(load_recipe("cifar10_speedrun", overrides), out)
    return out


def _first(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((t for t, acc in curve if acc >= level), None)


def _at(curve: list[tuple[float, float]], seconds: float) -> float | None:
    return next((acc for t, acc in reversed(curve) if t <= seconds), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 parquet directory")
    parser.add_argument("--out", type=Path, default=Path("runs/speedrun"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", default=None, help="train.epochs (default: the recipe's 9.9)")
    parser.add_argument("--nd", action="append", default=[], metavar="KEY=VALUE", help="ND's recipe overrides")
    parser.add_argument("--levels", default="85,90,92,93,94")
    args = parser.parse_args()

    common = {"data.path": str(args.data.expanduser().resolve()), "train.seed": args.seed}
    if args.epochs:
        common["train.epochs"] = args.epochs
    nd = {**common, "model.norm": "deconv", **dict(item.split("=", 1) for item in args.nd)}
    runs = {"BN": _run(args.out / f"bn-seed{args.seed}", common), "ND": _run(args.out / f"nd-seed{args.seed}", nd)}
    results = {name: read_results(run) for name, run in runs.items()}
    curves = {name: accuracy_curve(run) for name, run in runs.items()}

    print("| norm | accuracy (TTA) | accuracy (no TTA) | training s | run |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        acc, plain = r.get("accuracy"), r.get("accuracy_no_tta")
        print(f"| {name} | {100 * acc:.2f} | {100 * plain:.2f} | {r['train_seconds']:.1f} | {runs[name]} |"
              if acc is not None and plain is not None else f"| {name} | {r.get('status')} | - | - | {runs[name]} |")

    levels = [float(v) for v in args.levels.split(",")]
    print("\n| level | BN s | ND s | ND - BN s |")
    print("|---|---|---|---|")
    first = 0
    for level in levels:
        bn, nd_s = _first(curves["BN"], level), _first(curves["ND"], level)
        wins = nd_s is not None and (bn is None or nd_s < bn)
        first += wins
        gap = "-" if bn is None or nd_s is None else f"{nd_s - bn:+.1f}"
        print(f"| {level:g}% | {'not reached' if bn is None else f'{bn:.1f}'} | "
              f"{'not reached' if nd_s is None else f'{nd_s:.1f}'} | {gap} |")

    budget = results["BN"]["train_seconds"]
    print("\n| training s | BN | ND | ND - BN |")
    print("|---|---|---|---|")
    for seconds in (budget / 2, budget):
        bn, nd_acc = _at(curves["BN"], seconds), _at(curves["ND"], seconds)
        lead = "-" if bn is None or nd_acc is None else f"{nd_acc - bn:+.2f}"
        print(f"| {seconds:.0f} | {'-' if bn is None else f'{bn:.2f}'} | {'-' if nd_acc is None else f'{nd_acc:.2f}'}"
              f" | {lead} |")
    print(f"ND first at {first} of {len(levels)} levels (seed {args.seed}, {args.out})")


if __name__ == "__main__":
    main()
