"""``ndeconv models`` and ``ndeconv recipes``: what there is to train."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from .app import command
from .common import console, friendly_errors


def _params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@command("models")
def list_models(num_classes: int = typer.Option(10, help="Classes of the classifier.")) -> None:
    """List the paper's CIFAR models with their parameter counts, BN vs deconvolution."""
    import timm

    import ndeconv

    table = Table(title=f"CIFAR models ({num_classes} classes), parameters in millions")
    for column in ("model", "BN", "deconv", "paper (deconv)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ndeconv.models.CIFAR_MODELS:
        model = timm.create_model(name, num_classes=num_classes)
        bn = _params_m(model)
        deconv = _params_m(ndeconv.deconvolve(model))
        paper = ndeconv.models.PAPER_PARAMS_M.get(name)
        table.add_row(name, f"{bn:.2f}", f"{deconv:.2f}", "-" if paper is None else f"{paper:.2f}")
    console.print(table)


@command("recipes")
@friendly_errors
def list_recipes() -> None:
    """List the bundled recipes (use a name or a path with 'ndeconv train')."""
    from ..recipe import bundled_recipes, load_recipe

    table = Table(title="Bundled recipes", box=box.SIMPLE_HEAD, show_edge=False, padding=0, collapse_padding=True)
    for column in ("name", "data", "model", "norm", "length", "batch", "lr"):  # only a model name may wrap
        table.add_column(column, no_wrap=column != "model", overflow="fold")
    for name, path in bundled_recipes().items():
        r = load_recipe(path)
        source = r.data.builtin or r.data.hub_id or r.data.path
        t = r.train
        length = f"{t.epochs:g} epochs" if t.epochs is not None else str(t.budget or f"{t.steps} steps")
        table.add_row(name, str(source).rstrip("/").rsplit("/", 1)[-1], r.model.name, r.model.norm, length,
                      str(t.batch_size), f"{r.optim.lr:g}")
    console.print(table)
