"""The Typer application every command module registers itself with (``@command``)."""

from __future__ import annotations

import warnings

import typer

from .common import console

app = typer.Typer(
    name="ndeconv",
    help="Network deconvolution for timm models: train, compare and inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
command = app.command


def _print_version(value: bool) -> None:
    if value:
        from ..version import __version__

        console.print(f"ndeconv {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Network deconvolution (Ye et al., ICLR 2020) for timm models, on fastai and Accelerate."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
