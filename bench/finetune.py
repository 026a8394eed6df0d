"""Fine-tuning from a pretrained BN model: BN, deconvolution converted with its function kept,
converted without it, and deconvolution from scratch, at equal training time.

    python bench/finetune.py --data ../shared/data/cifar10 [--model resnet18_cifar] [--pretrain 10m]
                             [--budget 90s,5m] [--lr 0.01] [--scratch-lr 0.1] [--calibrate 2048]
                             [--out runs/finetune]

Pretrains the model with BN on CIFAR-10's six animal classes (all their training images, a time
budget, seed 0), then fine-tunes it on the four vehicle classes for each budget: BN as it is;
deconvolution converted with the BN model's function kept (``model.calibrate``, calibrated on
that many vehicle images), then fine-tuned with batch statistics or frozen (``model.freeze``:
the running estimates in training too, so training computes the function eval does); converted
as ``deconvolve`` does without calibration (BN's statistics and affines dropped); and
deconvolution from scratch at the paper's rate. One run at a time, each reused or resumed if it
exists; prints the vehicle test accuracy of each and the goal: the calibrated fine-tune ahead of
BN's at every budget and far ahead of the plain conversion's; then how far a training-mode
forward of the function-kept model is from its eval one (the BN model's function) right after
the conversion. Run it on a quiet machine: every run's step count comes from timing its first
steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ndeconv.data import make_dataloaders
from ndeconv.data.loaders import normalised_training_images
from ndeconv.errors import DivergedError
from ndeconv.recipe import load_recipe
from ndeconv.rundir import build_model, is_finished, read_results
from ndeconv.train import resume, train

ANIMALS, VEHICLES = [2, 3, 4, 5, 6, 7], [0, 1, 8, 9]


def _run(out: Path, overrides: dict) -> dict:
    """The results of a run of the cifar10 recipe with ``overrides`` in ``out``: reused, resumed or trained
    (a run that diverged is a result: its accuracy is ``None``)."""
    try:
        if out.exists() and any(out.iterdir()):
            return read_results(out) if is_finished(out) else resume(out)[1]
        return train(load_recipe("cifar10", overrides), out)[1]
    except DivergedError as e:
        return e.results


def train_eval_drift(overrides: dict, calibrate: int, n_iter: int) -> float:
    """Right after the function-kept conversion (``n_iter`` Newton-Schulz steps): the relative
    difference between the features of a training-mode forward (batch statistics) and of an eval
    forward (the calibrated running estimates, the BN model's function) on 128 calibration images."""
    recipe = load_recipe("cifar10", {**overrides, "model.norm": "deconv", "model.calibrate": calibrate,
                                     "model.deconv.n_iter": n_iter})
    images = normalised_training_images(make_dataloaders(recipe, device="cpu"), calibrate, 0)
    model = build_model(recipe, pretrained=True, calibration=list(images.split(recipe.train.batch_size)))
    with torch.no_grad():
        evaluated = model.eval().forward_features(images[:128])
        trained = model.train().forward_features(images[:128])
    return float((trained - evaluated).norm() / evaluated.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="resnet18_cifar")
    parser.add_argument("--pretrain", default="10m", help="the BN pretraining's time budget")
    parser.add_argument("--budget", default="90s,5m", help="comma-separated fine-tuning budgets")
    parser.add_argument("--lr", type=float, default=0.01, help="the fine-tuning learning rate")
    parser.add_argument("--scratch-lr", type=float, default=0.1, help="deconvolution from scratch (the paper's)")
    parser.add_argument("--calibrate", type=int, default=2048, help="vehicle images the conversion is calibrated on")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    args = parser.parse_args()

    common = {"data.path": str(args.data.expanduser().resolve()), "model.name": args.model, "train.seed": 0}
    pretrained = args.out / "pretrain-bn-animals"
    _run(pretrained, {**common, "model.norm": "bn", "data.num_classes": len(ANIMALS), "data.classes": ANIMALS,
                      "train.budget": args.pretrain})
    vehicles = {**common, "data.num_classes": len(VEHICLES), "data.classes": VEHICLES}
    start = {"model.pretrained": str(pretrained.resolve()), "optim.lr": args.lr}
    variants = {
        "BN fine-tuned": {**start, "model.norm": "bn"},
        "ND, function kept": {**start, "model.norm": "deconv", "model.calibrate": args.calibrate},
        "ND, function kept, frozen": {**start, "model.norm": "deconv", "model.calibrate": args.calibrate,
                                      "model.freeze": True},
        "ND, plain conversion": {**start, "model.norm": "deconv"},
        "ND from scratch": {"model.norm": "deconv", "optim.lr": args.scratch_lr},
    }
    budgets = [b.strip() for b in args.budget.split(",") if b.strip()]
    table = {}
    for budget in budgets:
        for name, overrides in variants.items():
            slug = name.lower().replace(",", "").replace(" ", "-")
            results = _run(args.out / f"{slug}-{budget}", {**vehicles, **overrides, "train.budget": budget})
            table[name, budget] = results
    print(f"| variant | {' | '.join(budgets)} |")
    print("|---|" + "---|" * len(budgets))
    for name in variants:
        cells = []
        for budget in budgets:
            r = table[name, budget]
            acc = r.get("accuracy")
            cells.append("diverged" if acc is None
                         else f"{100 * acc:.2f} ({r['steps']} steps, {r['train_seconds']:.0f} s)")
        print(f"| {name} | {' | '.join(cells)} |")
    kept, bn, plain = ("ND, function kept", "BN fine-tuned", "ND, plain conversion")
    ahead = [(table[kept, b].get("accuracy") or 0) > (table[bn, b].get("accuracy") or 0) for b in budgets]
    margin = [100 * ((table[kept, b].get("accuracy") or 0) - (table[plain, b].get("accuracy") or 0)) for b in budgets]
    print(f"function-kept ND ahead of BN at {sum(ahead)} of {len(budgets)} budgets; ahead of the plain conversion by "
          + ", ".join(f"{m:+.2f}" for m in margin) + " points")
    drift = {n: train_eval_drift({**vehicles, **start}, args.calibrate, n) for n in (5, 15, 40)}
    print("after the function-kept conversion, training-mode features differ from eval's by "
          + ", ".join(f"{100 * d:.0f}% ({n} Newton-Schulz steps)" for n, d in drift.items()))


if __name__ == "__main__":
    main()
