"""The ``ndeconv`` command line (Typer): ``ndeconv models``, ..."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="ndeconv",
    help="Network deconvolution for timm models: train, compare and inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Network deconvolution (Ye et al., ICLR 2020) for timm models, on fastai and Accelerate."""


def _params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@app.command("models")
def list_models(num_classes: int = typer.Option(10, help="Classes of the classifier.")) -> None:
    """List the paper's CIFAR models with their parameter counts, BN vs deconvolution."""
    import timm

    import ndeconv

    table = Table(title=f"CIFAR models ({num_classes} classes), parameters in millions")
    for column in ("model", "BN", "deconv", "paper (BN)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ndeconv.models.CIFAR_MODELS:
        model = timm.create_model(name, num_classes=num_classes)
        bn = _params_m(model)
        deconv = _params_m(ndeconv.deconvolve(model))
        paper = ndeconv.models.PAPER_PARAMS_M.get(name)
        table.add_row(name, f"{bn:.2f}", f"{deconv:.2f}", "-" if paper is None else f"{paper:.2f}")
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()
