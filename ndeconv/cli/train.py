"""``ndeconv train``: one run into a run directory, resumed, or launched on several processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..recipe.schema import Norm, Precision
from .app import command
from .common import (DEFAULT_RECIPE, INTERRUPTED, LOST_PEER, choices, console, err_console, friendly_errors, overrides,
                     quiet_datasets)


def summary_table(run_dir: Path, results: dict) -> Table:
    """The one-row table printed after a run (the score as a percentage, as the docs give it)."""
    table = Table(title=f"{results['recipe']}: {results['model']} ({results['norm']})")
    score = results.get("score", "accuracy")
    length = f"{results['steps']} steps" if results.get("budget") is not None else str(results["epochs"])
    columns = {f"{score} (%)": f"{100 * results[score]:.2f}", "epochs": length,
               "seconds": f"{results['seconds']:.1f}", "params (M)": f"{results['params'] / 1e6:.3f}",
               "precision": results["precision"], "processes": str(results["world_size"])}
    for name in columns:
        table.add_column(name, justify="right", overflow="fold")
    table.add_row(*columns.values())
    table.caption = f"run directory: {run_dir}"
    return table


@command("train")
@friendly_errors
def train_cmd(
    recipe: str = typer.Argument(DEFAULT_RECIPE, help="Recipe file or bundled recipe name (see `ndeconv recipes`)."),
    model: Optional[str] = typer.Option(None, help="timm model name (model.name)."),
    norm: Optional[str] = typer.Option(None, help=f"{choices(Norm)} (model.norm)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (train.epochs)."),
    budget: Optional[str] = typer.Option(None, help="Training time instead of epochs: 90s, 10m, 1h (train.budget; "
                                                    "validation not counted)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (optim.lr)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process (train.batch_size)."),
    precision: Optional[str] = typer.Option(None, help=f"{choices(Precision)} (train.precision)."),
    data: Optional[Path] = typer.Option(None, help="Local data: a parquet directory or an image folder (data.path)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<recipe>-<model>-<norm>-<time>)."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a fixed subset of N training examples."),
    seed: Optional[int] = typer.Option(None, help="Random seed (train.seed)."),
    log_with: Optional[str] = typer.Option(None, help="Comma-separated Accelerate trackers, e.g. tensorboard, "
                                                      "trackio, wandb (train.log_with); files go to RUN_DIR/logs."),
    set_: list[str] = typer.Option([], "--set", help="Override any recipe key: --set optim.weight_decay=1e-3."),
    resume: Optional[Path] = typer.Option(None, help="Continue an interrupted run directory."),
    num_processes: Optional[int] = typer.Option(None, min=1, help="Data-parallel processes, launched with "
                                                "`accelerate launch` (default 1; a resume: the run's own)."),
    sync_stats: Optional[bool] = typer.Option(None, "--sync-stats/--no-sync-stats",
                                              help="All-reduce deconvolution statistics across processes "
                                                   "(default on; a resume: the run's own)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a recipe (default: the bundled digits recipe with deconvolution) into a run directory."""
    from ..errors import LaunchError

    launched = os.environ.get("WORLD_SIZE")  # this process is one of a launch's: it trains, it does not launch
    if launched is not None and num_processes is not None and str(num_processes) != launched:
        raise LaunchError(f"--num-processes {num_processes}: this process is one of {launched} launched processes")
    flags = {"--model": model, "--norm": norm, "--budget": budget, "--epochs": epochs, "--lr": lr,
             "--batch-size": batch_size, "--precision": precision, "--data": data, "--limit-train": limit_train,
             "--seed": seed, "--log-with": log_with}
    plan = _plan(recipe, flags, set_, out, resume, num_processes, sync_stats)
    if plan.num_processes > 1 and launched is None:
        code = _launch(plan, quiet)
        if code != 0:
            raise typer.Exit(code)
        return  # rank 0 of the launched processes printed the summary
    from ..train.learner import process_state

    quiet_datasets(quiet)
    results = _execute(plan, quiet)
    if process_state().is_main_process:
        console.print(summary_table(plan.run_dir, results))


def _resume_hint(run_dir: Path) -> str:
    """How to continue an interrupted run, in the command line's words."""
    return f"continue from the last finished epoch with `ndeconv train --resume {run_dir}`"


def _plan(recipe: str, flags: dict, sets: list[str], out: Path | None, resume: Path | None,
          num_processes: int | None, sync_stats: bool | None):
    """The run the flags ask for, resolved once: a new run of the recipe with its overrides, or the
    continuation of ``resume`` with its own recipe, processes and synchronisation."""
    from ..errors import RecipeError
    from ..recipe import load_recipe
    from ..train.plan import first_rank, launch_processes, plan_resume, plan_train

    if resume is not None:
        given = {"a recipe": recipe != DEFAULT_RECIPE, **flags, "--out": out, "--set": sets}
        extra = [name for name, value in given.items() if value not in (None, False, [])]
        if extra:
            raise RecipeError(f"--resume continues {resume} with its own recipe; drop {', '.join(extra)} "
                              "(or start a new run)")
        return plan_resume(resume, num_processes=num_processes, sync_stats=sync_stats)
    if flags["--budget"] is not None and flags["--epochs"] is not None:
        raise RecipeError("--budget and --epochs are exclusive: a run's length is one of them")
    return plan_train(load_recipe(recipe, *overrides(flags, sets)), out,
                      num_processes=launch_processes(num_processes or 1),
                      sync_stats=True if sync_stats is None else sync_stats, check_dir=first_rank())


def _execute(plan, quiet: bool) -> dict:
    """Train ``plan`` in this process; an interruption, a lost process or a failed write ends with
    one line saying how to continue."""
    from ..errors import LaunchError, OutputError
    from ..rundir import CONFIG
    from ..train.plan import first_rank
    from ..train.run import execute
    from .launch import LAUNCHED_ENV

    try:
        return execute(plan, console=err_console, progress=not quiet)
    except LaunchError as e:
        if not e.lost_peer:
            raise
        if os.environ.get(LAUNCHED_ENV):  # ndeconv's launcher names the process that died
            raise typer.Exit(LOST_PEER) from None
        raise LaunchError(f"{e}; once every process is back, continue from the last finished epoch with the same "
                          f"launch and `--resume {plan.run_dir}`") from None
    except KeyboardInterrupt:
        if first_rank():  # one line for the run, not one per process
            err_console.print(f"interrupted: {_resume_hint(plan.run_dir)}", soft_wrap=True, highlight=False)
        raise typer.Exit(INTERRUPTED) from None
    except OutputError as e:  # a failed write mid-run (disk full, size limit): the last checkpoint is intact
        if not (plan.run_dir / CONFIG).is_file():
            raise
        raise OutputError(f"{e}; once there is room, {_resume_hint(plan.run_dir)}") from None


def _launch(plan, quiet: bool) -> int:
    """``ndeconv train`` on the plan's processes: a new run's resolved recipe travels to them as a file
    (so every override applies on every rank), or they resume the run directory."""
    import tempfile

    from ..errors import LaunchError
    from ..outputs import write_yaml
    from ..recipe import recipe_to_dict
    from .launch import launch_train

    with tempfile.TemporaryDirectory(prefix="ndeconv-recipe-") as tmp:
        args = ["--resume", str(plan.run_dir)]
        if plan.start == "new":
            recipe_file = write_yaml(Path(tmp) / f"{plan.recipe.name}.yaml", recipe_to_dict(plan.recipe))
            args = [str(recipe_file), "--out", str(plan.run_dir)]
        args += ["--sync-stats" if plan.sync_stats else "--no-sync-stats"] + (["--quiet"] if quiet else [])
        try:
            return launch_train(plan.num_processes, args)
        except LaunchError as e:
            raise LaunchError(f"{e}; {_resume_hint(plan.run_dir)}") from None
