"""Whole-network cost of deconvolution: BN vs ND train step and eval forward, and where ND's time goes.

    python bench/network.py [--models vgg11_cifar,resnet18_cifar] [--batch-size 128,256,512]
                            [--update-every 1,4,16] [--repeat 5] [--breakdown vgg11_cifar]
                            [--set model.deconv.n_iter=5] [--variant "b16 k4=block=16,update_every=4"]

For each model and batch size, the bundled cifar10 recipe builds it with BN and with
deconvolution (the paper's defaults, PyTorch's init), once per ``--update-every`` k (statistics
recomputed on every k-th step, ``model.deconv.update_every``); one training step (forward,
cross-entropy, backward, SGD with momentum) and one eval forward of each are timed, interleaved
so machine noise hits all alike, and the medians, the ND/BN ratios and the memory each needs are
printed. A k > 1 model is timed over whole k-step cycles (k steps a sample, divided by k): its
mean step, cheap and full steps in their proportion. Memory on CPU is
what the step keeps for backward (tensors saved by autograd, counted once per storage) plus
parameters and gradients; on CUDA it is the peak allocated. Each ``--variant
"LABEL=key=value,key=value"`` adds an ND model with those ``model.deconv`` settings (``--variant
fast=preset=fast``: the preset), timed in the same interleaved rounds. The per-layer breakdown times each
deconvolution layer's parts on the inputs that layer really sees: gathering patches, mean and
covariance, Newton-Schulz, folding into the weight, and the convolution itself, forward and
backward (backward = forward+backward minus forward), and for each k what a step costs on
average: statistics (patches, covariance, Newton-Schulz, with their backward) once per k steps,
the fold and the convolution every step (the fold's backward to ``D`` only on update steps).
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer import paired_median_seconds  # noqa: E402

import ndeconv  # noqa: E402
from ndeconv import functional as DF  # noqa: E402
from ndeconv.layers import Delinear, FastDeconv  # noqa: E402
from ndeconv.recipe import load_recipe  # noqa: E402
from ndeconv.rundir import build_model  # noqa: E402

def build(name: str, norm: str, overrides: dict[str, str], device: torch.device) -> nn.Module:
    """The model the cifar10 recipe trains, with ``model.norm`` = ``norm``."""
    recipe = load_recipe("cifar10", {**overrides, "model.name": name, "model.norm": norm})
    return build_model(recipe).to(device)


def train_step(model: nn.Module, x: Tensor, y: Tensor, sync: Callable[[], None]) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def run() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
    return run


def eval_forward(model: nn.Module, x: Tensor, sync: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(x)
        sync()
    return run


def train_memory_mb(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """MB a training step needs: on CUDA the peak allocated; on CPU the tensors autograd saves for
    backward (each storage once) plus parameters and their gradients."""
    model.train()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        F.cross_entropy(model(x), y).backward()
        torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return (sum(storages.values()) + 2 * params) / 2**20


def layer_inputs(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Module, Tensor]]:
    """Each deconvolution layer with the input it receives in a training forward."""
    seen: list[tuple[str, nn.Module, Tensor]] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m, args[0].detach())))
        for name, module in model.named_modules()
        if isinstance(module, (FastDeconv, Delinear))
    ]
    model.train()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def layer_parts(layer: nn.Module, x: Tensor) -> dict[str, Callable[[], Tensor]]:
    """The stages of a training forward of ``layer`` on ``x``, each a closure on fresh leaf inputs
    (``fold weight only``: the fold of a reuse step, whose ``D`` and mean are constants)."""
    if isinstance(layer, FastDeconv):
        def samples_of(inp: Tensor) -> Tensor:
            return DF.conv_patch_samples(inp, layer.kernel_size, block=layer.block, groups=layer.groups,
                                         stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                         sampling_stride=layer.sampling_stride)

        def fold(mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
            return DF.fold_conv(layer.weight, layer.bias, mean, deconv, layer.groups)

        def apply(inp: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
            return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        def samples_of(inp: Tensor) -> Tensor:
            return DF.linear_samples(inp, layer.block)

        def fold(mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
            return DF.fold_linear(layer.weight, layer.bias, mean, deconv)

        def apply(inp: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
            return F.linear(inp, weight, bias)

    with torch.no_grad():
        samples = samples_of(x)
        mean, cov = DF.whitening_stats(samples, layer.eps)
        deconv = DF.isqrt_newton_schulz(cov, layer.n_iter)
        weight, bias = fold(mean, deconv)

    def leaf(t: Tensor) -> Tensor:
        return t.detach().clone().requires_grad_(True)

    return {
        "patches": lambda: samples_of(leaf(x)),
        "covariance": lambda: torch.cat([t.flatten() for t in DF.whitening_stats(leaf(samples), layer.eps)]),
        "newton-schulz": lambda: DF.isqrt_newton_schulz(leaf(cov), layer.n_iter),
        "fold": lambda: torch.cat([t.flatten() for t in fold(leaf(mean), leaf(deconv))]),
        "fold weight only": lambda: torch.cat([t.flatten() for t in fold(mean, deconv)]),
        "conv": lambda: apply(leaf(x), leaf(weight), leaf(bias)),
    }


def time_parts(parts: dict[str, Callable[[], Tensor]], repeat: int,
               sync: Callable[[], None]) -> dict[str, tuple[float, float]]:
    """``{part: (forward s, backward s)}``, medians; backward = forward+backward minus forward."""
    out = {}
    for name, fn in parts.items():
        grad = torch.randn_like(fn())

        def forward(fn: Callable[[], Tensor] = fn) -> None:
            fn()
            sync()

        def both(fn: Callable[[], Tensor] = fn, grad: Tensor = grad) -> None:
            fn().backward(grad)
            sync()
        fwd, total = paired_median_seconds([forward, both], repeat, warmup=1)
        out[name] = (fwd, max(total - fwd, 0.0))
    return out


def describe(layer: nn.Module, x: Tensor) -> str:
    f = layer.running_deconv.shape[-1]
    if isinstance(layer, FastDeconv):
        k = "x".join(map(str, layer.kernel_size))
        return f"{layer.in_channels}->{layer.out_channels} k{k} @{x.shape[-2]}x{x.shape[-1]} f={f}"
    return f"linear {layer.in_features}->{layer.out_features} f={f}"


def breakdown(model: nn.Module, x: Tensor, repeat: int, sync: Callable[[], None], update_every: list[int]) -> None:
    parts = ["patches", "covariance", "newton-schulz", "fold", "conv"]
    print(f"\nper-layer breakdown (ms, forward / backward), batch {x.shape[0]}:")
    print(f"{'layer':<28s} {'shape':<34s} " + " ".join(f"{p:>15s}" for p in parts) + f" {'total':>8s}")
    totals = {p: [0.0, 0.0] for p in parts}
    fold_weight_only = 0.0  # the fold's backward when D is a constant (a reuse step): the weight's gradient
    for name, layer, inp in layer_inputs(model, x):
        stages = layer_parts(layer, inp)
        reuse_fold = stages.pop("fold weight only")
        timed = time_parts(stages, repeat, sync)
        fold_weight_only += time_parts({"fold": reuse_fold}, repeat, sync)["fold"][1]
        cells = []
        for p in parts:
            fwd, bwd = timed[p]
            totals[p][0] += fwd
            totals[p][1] += bwd
            cells.append(f"{fwd * 1e3:7.1f}/{bwd * 1e3:<7.1f}")
        total = sum(f + b for f, b in timed.values())
        print(f"{name:<28s} {describe(layer, inp):<34s} " + " ".join(f"{c:>15s}" for c in cells)
              + f" {total * 1e3:8.1f}")
    cells = [f"{f * 1e3:7.1f}/{b * 1e3:<7.1f}" for f, b in totals.values()]
    print(f"{'all layers':<28s} {'':<34s} " + " ".join(f"{c:>15s}" for c in cells)
          + f" {sum(f + b for f, b in totals.values()) * 1e3:8.1f}")
    stats = sum(sum(totals[p]) for p in ("patches", "covariance", "newton-schulz"))
    fold_full, fold_reuse = sum(totals["fold"]), totals["fold"][0] + fold_weight_only
    conv = sum(totals["conv"])
    print("\nmean cost of the deconvolution layers per step (ms), statistics recomputed every k-th step:")
    print(f"{'k':>4s} {'statistics':>11s} {'fold':>8s} {'conv':>8s} {'total':>8s}")
    for k in update_every:
        fold = (fold_full + (k - 1) * fold_reuse) / k
        total = stats / k + fold + conv
        print(f"{k:>4d} {stats / k * 1e3:11.1f} {fold * 1e3:8.1f} {conv * 1e3:8.1f} {total * 1e3:8.1f}")


def _csv_ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """``"LABEL=key=value,key=value"`` as the label and its ``model.deconv`` overrides."""
    label, _, settings = text.partition("=")
    pairs = [item.split("=", 1) for item in settings.split(",") if item.strip()]
    return label.strip(), {f"model.deconv.{key.strip()}": value.strip() for key, value in pairs}


def _cycles(step: Callable[[], None], k: int) -> Callable[[], None]:
    """``k`` consecutive steps as one timed sample (a whole update cycle)."""
    return lambda: [step() for _ in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg11_cifar,resnet18_cifar")
    parser.add_argument("--batch-size", "--batch", default="128", help="comma-separated batch sizes")
    parser.add_argument("--update-every", default="1", help="comma-separated k of model.deconv.update_every")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--breakdown", default="vgg11_cifar", help="model for the per-layer breakdown ('' for none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE,...",
                        help="an ND model with these model.deconv settings (repeatable)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    overrides = dict(item.split("=", 1) for item in args.set)
    batches, ks = _csv_ints(args.batch_size), _csv_ints(args.update_every)
    variants = [_variant(text) for text in args.variant]
    print(f"device={dev} threads={torch.get_num_threads()} batch sizes={batches} update_every={ks} "
          f"torch={torch.__version__} ndeconv={ndeconv.__version__} overrides={overrides or 'none'}")
    header = (f"{'model':<18s} {'batch':>5s} {'variant':<16s} {'train ms':>9s} {'ratio':>6s} {'eval ms':>8s} "
              f"{'ratio':>6s} {'memory MB':>10s}")
    print(header)
    for name in [m for m in args.models.split(",") if m]:
        for batch in batches:
            torch.manual_seed(0)
            x = torch.randn(batch, 3, 32, 32, device=dev)
            y = torch.randint(0, 10, (batch,), device=dev)
            models = {"BN": (build(name, "bn", overrides, dev), 1)}
            for k in ks:
                label = "ND" if k == 1 else f"ND k={k}"
                models[label] = (build(name, "deconv", {**overrides, "model.deconv.update_every": str(k)}, dev), k)
            for label, settings in variants:
                model = build(name, "deconv", {**overrides, **settings}, dev)
                models[label] = (model, max((getattr(m, "update_every", 1) for m in model.modules()), default=1))
            samples = paired_median_seconds([_cycles(train_step(m, x, y, sync), k) for m, k in models.values()],
                                            args.repeat)
            steps = [t / k for t, (_, k) in zip(samples, models.values())]
            evals = paired_median_seconds([eval_forward(m, x, sync) for m, _ in models.values()], args.repeat)
            for (variant, (model, _)), step, ev in zip(models.items(), steps, evals):
                print(f"{name:<18s} {batch:>5d} {variant:<16s} {step * 1e3:9.0f} {step / steps[0]:6.2f} "
                      f"{ev * 1e3:8.0f} {ev / evals[0]:6.2f} {train_memory_mb(model, x, y):10.0f}")
            if name == args.breakdown and batch == batches[0]:
                nd = models["ND"][0] if 1 in ks else build(name, "deconv", overrides, dev)  # the paper's k = 1
                breakdown(nd, x, args.repeat, sync, ks)
            del models


if __name__ == "__main__":
    main()
