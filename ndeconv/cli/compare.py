"""``ndeconv compare``: BN against deconvolution over models, epoch counts or training times, a grid and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..recipe.schema import Norm
from .app import command
from .common import choices, console, csv_list, err_console, friendly_errors, load_checked_recipe, quiet_datasets


@command("compare")
@friendly_errors
def compare_cmd(
    recipe: str = typer.Argument(..., help="Recipe file or bundled recipe name."),
    models: Optional[str] = typer.Option(None, help="Comma-separated timm models (default: the recipe's)."),
    epochs: Optional[str] = typer.Option(None, help="Comma-separated epoch counts, e.g. 1,20 "
                                         "(default: the recipe's)."),
    budget: Optional[str] = typer.Option(None, help="Comma-separated training-time budgets, e.g. 90s,3m,10m: "
                                         "every cell also trains for that long (an equal-time comparison)."),
    norms: str = typer.Option("bn,deconv", help=f"Comma-separated norms to train: {choices(Norm, ', ')} "
                              "(gn: GroupNorm; none: no norm, the control)."),
    grid: list[str] = typer.Option([], "--grid", help="Train every value of a recipe key: --grid optim.lr=0.1,0.03 "
                                   "(repeatable; every combination is a cell)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds; tables report the mean over them."),
    data: Optional[Path] = typer.Option(None, help="Local data: a parquet directory or an image folder."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a fixed subset of N training examples."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: runs/compare-<recipe>)."),
    set_: list[str] = typer.Option([], "--set", help="Override any recipe key: --set optim.lr=0.05."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train each model with BN and with deconvolution for each epoch count or time budget (and grid
    setting and seed); write the paper's Table 1 and, with --grid, the best setting per model and norm."""
    from ..compare import equal_time_table, parse_grid, rich_table, run_comparison, write_outputs
    from ..errors import RecipeError

    quiet_datasets(quiet)
    r, task = load_checked_recipe(recipe, {"--data": data, "--limit-train": limit_train}, set_)
    names = csv_list(models, "--models") if models else [r.model.name]
    unknown = [m for m in names if not task.accepts_model(m)]
    if unknown:
        raise RecipeError(f"--models: unknown model '{unknown[0]}' for the {r.task} task (timm.list_models() lists "
                          "timm's)")
    time_budgets = csv_list(budget, "--budget") if budget else []
    if epochs:
        counts = csv_list(epochs, "--epochs", int)
    else:  # the recipe's own length, unless the comparison is by time only
        counts = [] if time_budgets else [r.train.epochs] if r.train.epochs is not None else []
    if any(c < 1 for c in counts):
        raise RecipeError(f"--epochs {epochs}: epoch counts must be positive")
    if not counts and not time_budgets:
        raise RecipeError("compare: the recipe has no epoch count; give --epochs or --budget")
    seed_list = csv_list(seeds, "--seeds", int) if seeds else None
    out = out or Path("runs") / f"compare-{r.name}"
    cells = run_comparison(r, names, counts, out, console=err_console, progress=not quiet, grid=parse_grid(grid),
                           seeds=seed_list, norms=csv_list(norms, "--norms"), time_budgets=time_budgets)
    subset = f", {r.train.limit_train} training images" if r.train.limit_train else ""
    title = f"{r.name}: BN vs network deconvolution (ND){subset}"
    rows = write_outputs(cells, counts, out, title, seeds=seed_list)
    if rows:
        console.print(rich_table(rows, counts, title))
    if time_budgets:
        console.print(equal_time_table(cells, title))
    console.print(f"wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'curves.png'}", highlight=False)
