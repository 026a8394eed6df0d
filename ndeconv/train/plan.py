"""A run's plan, resolved once at the edge (the command line or :func:`ndeconv.train.train` /
:func:`ndeconv.train.resume`): the recipe with its overrides, its task, the run directory and how
the run starts there, the process count and the statistics synchronisation. Everything below
receives the plan and looks nothing up again; only the run's length waits for the data
(:mod:`ndeconv.train.length`, a budget's calibration included)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from ..errors import DivergedError, LaunchError, RecipeError, RunDirError
from ..outputs import check_writable
from ..recipe import Recipe
from ..rundir import CHECKPOINT, CONFIG, LOCK, is_finished, load_run_recipe, read_results
from ..tasks import Task, resolve_task
from .processes import read_launch

__all__ = ["RunPlan", "plan_train", "plan_resume", "default_run_dir", "launch_processes", "first_rank"]

#: How a run starts in its directory: a new run; an interrupted one from the checkpoint of its last
#: finished epoch; an interrupted one that had finished no epoch (from the start, with its recorded
#: recipe); a finished one (nothing to train: its results stand).
Start = Literal["new", "checkpoint", "restart", "finished"]


@dataclass(frozen=True)
class RunPlan:
    """What a run trains, where, and on how many processes."""

    recipe: Recipe
    task: Task
    run_dir: Path
    start: Start
    num_processes: int = 1
    sync_stats: bool = True


def launch_processes(default: int = 1) -> int:
    """The processes of the launch this process belongs to (``WORLD_SIZE``), else ``default``."""
    return int(os.environ.get("WORLD_SIZE", default))


def first_rank() -> bool:
    """Whether this process is its launch's first (or runs alone), as the launcher's ``RANK`` says."""
    return os.environ.get("RANK", "0") == "0"


def default_run_dir(recipe: Recipe, root: str | Path = "runs") -> Path:
    """``runs/<recipe>-<model>-<norm>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{recipe.name}-{recipe.model.name}-{recipe.model.norm}-{stamp}"


def plan_train(recipe: Recipe, out: str | Path | None = None, *, num_processes: int = 1, sync_stats: bool = True,
               check_dir: bool = True) -> RunPlan:
    """The plan of a new run of ``recipe`` into ``out`` (default :func:`default_run_dir`), which must be
    writable and empty. ``check_dir`` False: the directory is another process's to check (a launched rank)."""
    task = resolve_task(recipe)
    run_dir = check_writable(Path(out) if out is not None else default_run_dir(recipe), directory=True)
    if check_dir and run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise RunDirError(f"{run_dir}: already exists and is not empty (resume it to continue it, or choose another "
                          "output directory)")
    return RunPlan(recipe, task, run_dir, "new", num_processes, sync_stats)


def plan_resume(run_dir: str | Path, *, num_processes: int | None = None, sync_stats: bool | None = None) -> RunPlan:
    """The plan that continues ``run_dir`` with its own recipe, processes and synchronisation
    (recorded when it started); asking for other ones is refused, as is a run that diverged."""
    run_dir = check_writable(Path(run_dir), directory=True)
    recipe = load_run_recipe(run_dir)
    launch = read_launch(run_dir)
    if launch is not None:
        if num_processes is not None and num_processes != launch["num_processes"]:
            raise LaunchError(f"num_processes {num_processes}: {run_dir} was trained on {launch['num_processes']} "
                              "process(es) and resumes on them (other batches would give other numbers)",
                              recorded=launch["num_processes"], argument="num_processes")
        if sync_stats is not None and sync_stats != launch["sync_stats"]:
            argument = "sync_stats" if sync_stats else "no_sync_stats"
            raise LaunchError(f"{argument}: {run_dir} was trained with{'out' if sync_stats else ''} synchronised "
                              "statistics and resumes so", argument=argument)
        num_processes, sync_stats = launch["num_processes"], launch["sync_stats"]
    task = resolve_task(recipe)
    if is_finished(run_dir):
        results = read_results(run_dir)
        if results.get("status") == "diverged":
            at = results.get("diverged", {})
            raise DivergedError(f"{run_dir}: this run diverged (epoch {at.get('epoch')}, step {at.get('step')}); "
                                "train a new run, e.g. with a lower optim.lr", results)
        start: Start = "finished"
    else:
        if recipe.data.path is not None and not Path(recipe.data.path).exists():
            raise RecipeError(f"{run_dir / CONFIG}: data.path {recipe.data.path} no longer exists")
        start = "checkpoint" if (run_dir / CHECKPOINT).is_file() else "restart"
    processes = num_processes or launch_processes()  # unrecorded: the launch's own
    return RunPlan(recipe, task, run_dir, start, processes, True if sync_stats is None else sync_stats)
