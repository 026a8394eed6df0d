"""The grid of a comparison and its runs: cells (model x length x norm x setting x seed), each its own
run directory, trained, resumed or reused."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import DivergedError, RecipeError, RunDirError
from ..norms import NORM_LABEL
from ..recipe import Recipe, apply_overrides, budget_label, parse_budget, recipe_to_dict
from ..rundir import CONFIG, load_run_recipe
from ..train.run import resume, train

__all__ = ["NORMS", "DEFAULT_NORMS", "LABEL", "Cell", "parse_grid", "run_comparison"]

NORMS = tuple(NORM_LABEL)
LABEL = NORM_LABEL
DEFAULT_NORMS = ("bn", "deconv")
DECONV_ONLY = "model.deconv."

Setting = tuple[tuple[str, str], ...]


@dataclass
class Cell:
    """One finished run of the comparison: its grid ``setting`` (key, value as given) and seed."""

    model: str
    norm: str
    epochs: int | None
    run_dir: Path
    results: dict
    setting: Setting = ()
    seed: int | None = None
    protocol: bool = True
    budget: str | None = None

    @property
    def label(self) -> str:
        """The setting as ``key=value, ...`` (``recipe`` when there is none)."""
        return ", ".join(f"{k}={v}" for k, v in self.setting) or "recipe"

    @property
    def length(self) -> int | str:
        """The run's length as the tables show it: its epochs, or its time budget (``90s``)."""
        return self.epochs if self.budget is None else self.budget


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["optim.lr=0.1,0.03", ...]`` -> ``{"optim.lr": ["0.1", "0.03"]}`` (values checked later).

    A key may be scoped to one norm, ``bn:optim.lr=0.1,0.03,0.01``: only that norm's cells vary it,
    the other norms keep the recipe's value.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not options:
            raise RecipeError(f"grid {item}: expected key.sub=value1,value2,...", argument="grid")
        scope, colon, bare = key.rpartition(":")
        if colon and (scope not in NORMS or not bare):
            raise RecipeError(f"grid {item}: a scoped key is norm:key.sub with norm one of {', '.join(NORMS)}",
                              argument="grid")
        if key in grid:
            raise RecipeError(f"grid {key}: given twice", argument="grid")
        if len(set(options)) != len(options):
            raise RecipeError(f"grid {item}: a value is repeated", argument="grid")
        grid[key] = options
    return grid


def _for_norm(setting: Setting, norm: str) -> Setting:
    """The part of a grid setting that applies to ``norm``'s cells, scopes removed: keys scoped to
    another norm are dropped, and cells of the other norms drop ``model.deconv.*`` (it changes only
    a deconvolution model)."""
    kept = []
    for key, value in setting:
        scope, _, bare = key.rpartition(":")
        if (scope and scope != norm) or (norm != "deconv" and bare.startswith(DECONV_ONLY)):
            continue
        kept.append((bare, value))
    return tuple(kept)


def _run_name(model: str, norm: str, length: int | str, setting: Setting = (), seed: int | None = None) -> str:
    """``<model>-<norm>-<N>ep`` (or ``-<budget>``) ``-<key>=<value>...-seed<S>``."""
    name = f"{model}-{norm}-" + (f"{length}ep" if isinstance(length, int) else length)
    name += "".join(f"-{k}={v}" for k, v in setting)
    return name.replace("/", "_") + ("" if seed is None else f"-seed{seed}")


def _get(recipe: Recipe, key: str) -> Any:
    node: Any = recipe_to_dict(recipe)
    for part in key.split("."):
        node = node[part]
    return node


def _variant(recipe: Recipe, model: str, norm: str, length: int | str, setting: Setting = (),
             seed: int | None = None) -> Recipe:
    fixed = {"model.name": model, "model.norm": norm,
             "train.epochs" if isinstance(length, int) else "train.budget": length}
    if seed is not None:
        fixed["train.seed"] = seed
    recipe = apply_overrides(recipe, fixed, dict.fromkeys(fixed, "compare"))
    values = dict(setting)
    try:
        return apply_overrides(recipe, values, {key: f"grid {key}={value}" for key, value in values.items()})
    except RecipeError as e:
        raise RecipeError(str(e), argument="grid") from None


def _is_protocol(base: Recipe, variant: Recipe, setting: Setting) -> bool:
    """Whether every grid key keeps the recipe's own value (the paper's protocol)."""
    return all(_get(variant, key) == _get(base, key) for key, _ in setting)


def _run_one(recipe: Recipe, run_dir: Path, console: Console | None, progress: bool) -> dict:
    """Train ``recipe`` into ``run_dir``, reusing a finished run and resuming an interrupted one."""
    if (run_dir / CONFIG).is_file():
        existing = load_run_recipe(run_dir)
        if recipe.train.budget is not None and recipe.train.steps is None:  # the run's calibration is its own
            existing = replace(existing, train=replace(existing.train, steps=None, step_seconds=None))
        if existing != recipe:
            raise RunDirError(f"{run_dir}: holds a run with different settings; choose another output directory")
    try:
        if (run_dir / CONFIG).is_file():
            return resume(run_dir, console=console, progress=progress)[1]  # finished runs return their results
        return train(recipe, run_dir, console=console, progress=progress)[1]
    except DivergedError as e:  # a result of the comparison: marked, never the best, and the others go on
        if console is not None:
            console.print(f"diverged: {e}", highlight=False, markup=False, soft_wrap=True)
        return e.results


def _plan(recipe: Recipe, models: list[str], lengths: list[int | str], out: Path, grid: dict[str, list[str]],
          seeds: list[int] | None, norms: Sequence[str]) -> list[tuple[Cell, Recipe]]:
    """Every cell to run, its recipe built (so a bad grid key or value fails before any training)."""
    plan: dict[Path, tuple[Cell, Recipe]] = {}
    settings = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]
    for model, length, norm, setting, seed in itertools.product(models, lengths, norms, settings, seeds or [None]):
        setting = _for_norm(setting, norm)
        run_dir = out / _run_name(model, norm, length, setting, seed)
        if run_dir not in plan:
            variant = _variant(recipe, model, norm, length, setting, seed)
            epochs, budget = (length, None) if isinstance(length, int) else (None, length)
            cell = Cell(model, norm, epochs, run_dir, {}, setting, seed, _is_protocol(recipe, variant, setting),
                        budget)
            plan[run_dir] = (cell, variant)
    return list(plan.values())


def run_comparison(recipe: Recipe, models: list[str], epochs: list[int], out: Path,
                   console: Console | None = None, progress: bool = True, grid: dict[str, list[str]] | None = None,
                   seeds: list[int] | None = None, norms: Sequence[str] = DEFAULT_NORMS,
                   time_budgets: Sequence[str] = ()) -> list[Cell]:
    """Train (or reuse) every model x length x norm x grid setting x seed under ``out``; the cells in order.

    The lengths are the ``epochs`` counts and the ``time_budgets`` (``"90s"``, ``"10m"``: each run
    calibrates its own step count to that much training time).
    """
    unknown = [n for n in norms if n not in NORMS]
    if unknown or not norms:
        raise RecipeError(f"norms: choose from {', '.join(NORMS)}, got {', '.join(norms) or 'nothing'}",
                          argument="norms")
    for budget in time_budgets:
        try:
            parse_budget(budget, "time_budgets")
        except RecipeError as e:
            raise RecipeError(str(e), argument="time_budgets") from None
    lengths = [*epochs, *(budget_label(b) for b in time_budgets)]
    cells = []
    for cell, variant in _plan(recipe, models, lengths, out, grid or {}, seeds, norms):
        if console is not None:
            seed = "" if cell.seed is None else f" seed {cell.seed}"
            length = f"{cell.epochs} epoch(s)" if cell.budget is None else f"{cell.budget} of training"
            console.print(f"[bold]{cell.model}[/bold] {LABEL[cell.norm]} {length} "
                          f"{cell.label}{seed} -> {cell.run_dir}", highlight=False)
        cell.results = _run_one(variant, cell.run_dir, console, progress)
        if cell.budget is not None:
            cell.epochs = cell.results["epochs"]
        cells.append(cell)
    return cells
