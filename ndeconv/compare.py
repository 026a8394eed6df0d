"""``ndeconv compare``: BN vs deconvolution for several models and epoch budgets, as the paper's Table 1.

Every (model, budget, norm) is its own run directory under the comparison's output directory,
trained with a fresh schedule for that budget. A grid over any recipe keys
(``{"optim.lr": ["0.1", "0.03"]}``) and several seeds multiply the cells; BN cells ignore
``model.deconv.*`` keys (they do not change a BN model), so they are trained once per remaining
setting. Finished runs are reused and interrupted ones resumed, so a comparison that stopped
picks up where it was.

Outputs: ``table.csv`` keeps every run; ``table.md`` shows the paper's Table 1 layout for the
recipe's own setting (the paper's protocol) averaged over seeds and, with a grid, the best
setting per model, norm and budget; ``curves.png`` plots validation accuracy against epochs
and against training seconds.

Floor: above ``train`` and the run directory; below the command line.
"""

from __future__ import annotations

import csv
import io
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import DivergedError, RecipeError, RunDirError
from .io import atomic_write, write_text
from .recipe import Recipe, apply_override, budget_label, parse_budget, recipe_to_dict
from .rundir import CONFIG, METRICS, load_run_recipe, read_metrics
from .tasks import metric_label
from .train.run import resume, train

__all__ = ["Cell", "parse_grid", "run_comparison", "table_rows", "setting_rows", "best_rows", "equal_time_rows",
           "accuracy_curve", "equal_seconds_rows", "time_to_accuracy_rows", "table_markdown", "table_csv",
           "equal_time_table", "plot_curves", "write_outputs"]

NORMS = ("bn", "deconv")
LABEL = {"bn": "BN", "deconv": "ND"}
BN_IGNORES = "model.deconv."

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
    the other norm keeps the recipe's value.
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
    the other norm are dropped, and BN cells drop ``model.deconv.*`` (it does not change a BN model)."""
    kept = []
    for key, value in setting:
        scope, _, bare = key.rpartition(":")
        if (scope and scope != norm) or (norm == "bn" and bare.startswith(BN_IGNORES)):
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
    fixed = [("model.name", model), ("model.norm", norm),
             ("train.epochs" if isinstance(length, int) else "train.budget", length)]
    if seed is not None:
        fixed.append(("train.seed", seed))
    for key, value in fixed:
        recipe = apply_override(recipe, key, value, source="compare")
    for key, value in setting:
        try:
            recipe = apply_override(recipe, key, value, source=f"grid {key}={value}")
        except RecipeError as e:
            raise RecipeError(str(e), argument="grid") from None
    return recipe


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


def run_comparison(recipe: Recipe, models: list[str], budgets: list[int], out: Path,
                   console: Console | None = None, progress: bool = True, grid: dict[str, list[str]] | None = None,
                   seeds: list[int] | None = None, norms: Sequence[str] = NORMS,
                   time_budgets: Sequence[str] = ()) -> list[Cell]:
    """Train (or reuse) every model x length x norm x grid setting x seed under ``out``; the cells in order.

    The lengths are the epoch ``budgets`` and the ``time_budgets`` (``"90s"``, ``"10m"``: each run
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
    lengths = [*budgets, *(budget_label(b) for b in time_budgets)]
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


def _metric(cells: list[Cell]) -> tuple[str, str]:
    """The headline metric of the cells' task (accuracy, or mean IoU for segmentation): key and label."""
    key = cells[0].results.get("score", "accuracy") if cells else "accuracy"
    return key, metric_label(key)


def diverged(cells: list[Cell]) -> bool:
    """Whether any of the cells (the seeds of one setting) diverged."""
    return any(c.results.get("status") == "diverged" for c in cells)


def _mean(cells: list[Cell], key: str) -> float | None:
    """Mean of ``key`` over the cells' results (``score``: the headline metric); ``None`` when a
    cell diverged."""
    if key == "score" and diverged(cells):
        return None
    return statistics.fmean(c.results[_metric([c])[0] if key == "score" else key] for c in cells)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _groups(cells: list[Cell]) -> dict[tuple, list[Cell]]:
    """Cells that differ only in their seed, keyed by (model, norm, length, setting)."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.norm, cell.length, cell.setting), []).append(cell)
    return groups


def _by_epochs(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.budget is None]


def _by_time(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.budget is not None]


def _train_seconds(results: dict) -> float:
    """Training seconds without validation (older runs recorded only ``seconds``, validation included)."""
    return results.get("train_seconds", results["seconds"])


def _mean_train_seconds(cells: list[Cell]) -> float:
    """The cells' mean training seconds (validation not counted), to a tenth of a second."""
    return round(statistics.fmean(_train_seconds(c.results) for c in cells), 1)


def table_rows(cells: list[Cell], budgets: list[int]) -> list[dict]:
    """The paper's protocol at each epoch budget, one row per model: parameters (of the
    deconvolution model, as the paper counted) and accuracies in % (mean over seeds) with training
    seconds (validation not counted)."""
    rows: dict[str, dict] = {}
    for (model, norm, epochs, _), group in _groups([c for c in _by_epochs(cells) if c.protocol]).items():
        row = rows.setdefault(model, {"model": model})
        if norm == "deconv":
            row["params_M"] = round(group[0].results["params"] / 1e6, 2)
        row[f"{LABEL[norm]}_{epochs}ep"] = _pct(_mean(group, "score"))
        row[f"{LABEL[norm]}_{epochs}ep_seconds"] = _mean_train_seconds(group)
    columns = ["model", "params_M"] + [f"{n}_{e}ep" for e in budgets for n in ("BN", "ND")] + \
        [f"{n}_{e}ep_seconds" for e in budgets for n in ("BN", "ND")]
    return [{c: row.get(c, "") for c in columns} for row in rows.values()]


def setting_rows(cells: list[Cell]) -> list[dict]:
    """Per model, norm, length (epochs, or time budget) and grid setting: mean accuracy (%), seconds
    (validation included), training seconds and optimizer steps over its seeds."""
    return [{"model": model, "norm": LABEL[norm], "epochs": length, "setting": group[0].label,
             "protocol": group[0].protocol, "accuracy": _pct(_mean(group, "score")),
             "runs": len(group), "seconds": round(_mean(group, "seconds"), 1),
             "train_seconds": _mean_train_seconds(group),
             "steps": round(statistics.fmean(c.results.get("steps") or 0 for c in group))}
            for (model, norm, length, _), group in _groups(cells).items()]


def equal_time_rows(cells: list[Cell]) -> list[dict]:
    """Per model and time budget: each norm's best setting (mean over seeds, %), its training
    seconds, and ND's lead over BN in points."""
    rows: dict[tuple, dict] = {}
    for r in setting_rows(_by_time(cells)):
        entry = rows.setdefault((r["model"], r["epochs"]), {"model": r["model"], "budget": r["epochs"]})
        norm = r["norm"]
        if r["accuracy"] is not None and r["accuracy"] > entry.get(norm, -1.0):
            entry.update({norm: r["accuracy"], f"{norm}_setting": r["setting"],
                          f"{norm}_seconds": r["train_seconds"], f"{norm}_steps": r["steps"]})
    for entry in rows.values():
        entry["lead"] = round(entry["ND"] - entry["BN"], 2) if "ND" in entry and "BN" in entry else None
    return list(rows.values())


def accuracy_curve(run_dir: Path, metric: str = "accuracy") -> list[tuple[float, float]]:
    """``(training seconds so far, headline metric in %)`` at every validation of a run (none for a
    run that diverged in its first epoch)."""
    if not (run_dir / METRICS).is_file():
        return []
    rows = read_metrics(run_dir / METRICS)
    seconds = itertools.accumulate(r.get("train_seconds", r["seconds"]) for r in rows)
    return [(t, 100 * r[metric]) for t, r in zip(seconds, rows)]


def _at_seconds(curve: list[tuple[float, float]], seconds: float) -> tuple[float, float] | None:
    """The last validation of a curve at or before ``seconds`` of training: ``(its seconds, its metric)``."""
    return next((point for point in reversed(curve) if point[0] <= seconds), None)


def equal_seconds_rows(cells: list[Cell]) -> list[dict]:
    """Per model and epoch budget of the paper's protocol, both norms trained: each norm's final
    accuracy (%) and training seconds, and the other norm's accuracy at those seconds, read from its
    curve (its last validation by then; the mean over its seeds, ``None`` where a seed had not
    validated yet). A norm that finished sooner holds its final accuracy from then on."""
    metric = _metric(cells)[0]
    finals: dict[tuple, dict[str, list[Cell]]] = {}
    for (model, norm, epochs, _), group in _groups([c for c in _by_epochs(cells) if c.protocol]).items():
        finals.setdefault((model, epochs), {})[LABEL[norm]] = group
    rows = []
    for (model, epochs), by_norm in finals.items():
        if len(by_norm) < 2:
            continue
        row: dict = {"model": model, "epochs": epochs}
        for name, group in by_norm.items():
            row[name] = _pct(_mean(group, "score"))
            row[f"{name}_seconds"] = _mean_train_seconds(group)
        for name, other in (("BN", "ND"), ("ND", "BN")):
            points = [_at_seconds(accuracy_curve(c.run_dir, metric), row[f"{other}_seconds"]) for c in by_norm[name]]
            reached = None not in points
            row[f"{name}_at_{other}"] = round(statistics.fmean(p[1] for p in points), 2) if reached else None
            row[f"{name}_at_{other}_seconds"] = round(statistics.fmean(p[0] for p in points), 1) if reached else None
        rows.append(row)
    return rows


def _first_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((t for t, acc in curve if acc >= level), None)


def time_to_accuracy_rows(cells: list[Cell], levels: Sequence[float] | None = None) -> list[dict]:
    """Per model and accuracy level: the training seconds each norm needed to first reach it, from
    every run's per-epoch curve (epoch and time budgets alike), and which run got there first.

    A setting's time is the mean over its seeds, counted only when every seed reached the level.
    Without ``levels``: the multiples of 10 up to the best accuracy any run of the model reached
    (the five highest).
    """
    metric = _metric(cells)[0]
    rows = []
    for model in dict.fromkeys(c.model for c in cells):
        groups = {k: g for k, g in _groups(cells).items() if k[0] == model}
        curves = {id(c): accuracy_curve(c.run_dir, metric) for g in groups.values() for c in g}
        top = max((acc for curve in curves.values() for _, acc in curve), default=0.0)
        model_levels = levels or [10.0 * k for k in range(1, int(top // 10) + 1)][-5:]
        for level in model_levels:
            row: dict = {"model": model, "level": level}
            for (_, norm, length, _), group in groups.items():
                times = [_first_reach(curves[id(c)], level) for c in group]
                if None in times:
                    continue
                mean = statistics.fmean(times)
                name = LABEL[norm]
                if mean < row.get(f"{name}_seconds", float("inf")):
                    unit = " ep" if isinstance(length, int) else ""
                    row.update({f"{name}_seconds": round(mean, 1), f"{name}_run": f"{length}{unit}, {group[0].label}"})
            rows.append(row)
    return rows


def best_rows(cells: list[Cell]) -> list[dict]:
    """Per model, norm and epoch budget: the protocol's accuracy and the best grid setting's (means over seeds, %)."""
    best: dict[tuple, dict] = {}
    for row in setting_rows(_by_epochs(cells)):
        entry = best.setdefault((row["model"], row["norm"], row["epochs"]),
                                {**{k: row[k] for k in ("model", "norm", "epochs")}, "protocol": "", "best": -1.0,
                                 "setting": ""})
        if row["protocol"]:
            entry["protocol"] = row["accuracy"]
        if row["accuracy"] is not None and row["accuracy"] > entry["best"]:
            entry.update(best=row["accuracy"], setting=row["setting"])
    return list(best.values())


def _fmt(value: Any) -> str:
    """A table cell: accuracies with two decimals, ``None`` (a diverged run) as ``diverged``."""
    if value is None:
        return "diverged"
    return f"{value:.2f}" if isinstance(value, float) else (str(value) if value != "" else "-")


def _accuracy_cells(row: dict, budgets: list[int], emphasis: str) -> list[str]:
    """BN and ND accuracies per budget, ND wrapped in ``emphasis`` where it beats BN."""
    cells = []
    for e in budgets:
        bn, nd = row[f"BN_{e}ep"], row[f"ND_{e}ep"]
        wins = isinstance(bn, float) and isinstance(nd, float) and nd > bn
        cells += [_fmt(bn), emphasis.format(_fmt(nd)) if wins else _fmt(nd)]
    return cells


def _seconds(value: Any) -> str:
    return "-" if value in (None, "") else f"{value:.1f}"


def _equal_time_lines(cells: list[Cell], label: str) -> list[str]:
    """The time-budget sections: each norm's best setting per budget, and every setting."""
    lines = [f"**Equal training time** (validation {label} %, each norm's best setting at each budget, mean over "
             "seeds; seconds of training without validation)", "",
             "| model | budget | BN | BN setting | BN s | ND | ND setting | ND s | ND - BN |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in equal_time_rows(cells):
        lead = "-" if r["lead"] is None else f"{r['lead']:+.2f}"
        lines.append(f"| {r['model']} | {r['budget']} | {_fmt(r.get('BN', ''))} | {r.get('BN_setting', '-')} | "
                     f"{_seconds(r.get('BN_seconds'))} | {_fmt(r.get('ND', ''))} | {r.get('ND_setting', '-')} | "
                     f"{_seconds(r.get('ND_seconds'))} | {lead} |")
    lines += ["", f"**Every setting at each budget** ({label} %, mean over its runs; training seconds and optimizer "
                  "steps per run)", "",
              f"| model | norm | budget | setting | {label} | runs | training s | steps |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['norm']} | {r['epochs']} | {r['setting']}{' (protocol)' * r['protocol']} | "
              f"{_fmt(r['accuracy'])} | {r['runs']} | {r['train_seconds']:.1f} | {r['steps']} |"
              for r in setting_rows(_by_time(cells))]
    return lines + [""]


def _time_to_accuracy_lines(cells: list[Cell], label: str) -> list[str]:
    lines = [f"**Time to {label}** (training seconds until the validation {label} first reached the level: the "
             "fastest setting and length of each norm, mean over seeds; validated at every epoch's end and at a "
             "budget's end)", "",
             "| model | level | BN s | BN run | ND s | ND run | BN / ND |", "|---|---|---|---|---|---|---|"]
    for r in time_to_accuracy_rows(cells):
        bn, nd = r.get("BN_seconds"), r.get("ND_seconds")
        ratio = f"{bn / nd:.2f}" if bn is not None and nd else "-"
        lines.append(f"| {r['model']} | {r['level']:g}% | {_seconds(bn)} | {r.get('BN_run', 'not reached')} | "
                     f"{_seconds(nd)} | {r.get('ND_run', 'not reached')} | {ratio} |")
    return lines + [""]


def _equal_seconds_lines(cells: list[Cell], label: str) -> list[str]:
    """The protocol's runs at equal training seconds: each norm's final result beside the other's at that time."""
    def at(row: dict, name: str, other: str) -> str:
        value = row[f"{name}_at_{other}"]
        return "no validation yet" if value is None else f"{value:.2f} ({row[f'{name}_at_{other}_seconds']:.1f} s)"

    rows = equal_seconds_rows(cells)
    if not rows:
        return []
    lines = [f"**At equal training seconds** (the paper's protocol: each norm's final {label} % and training "
             "seconds, and the other norm's at those seconds, its last validation by then with its own seconds)", "",
             "| model | epochs | BN | BN s | ND at BN's s | ND | ND s | BN at ND's s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['epochs']} | {_fmt(r['BN'])} | {r['BN_seconds']:.1f} | {at(r, 'ND', 'BN')} | "
              f"{_fmt(r['ND'])} | {r['ND_seconds']:.1f} | {at(r, 'BN', 'ND')} |" for r in rows]
    return lines + [""]


def table_markdown(rows: list[dict], budgets: list[int], title: str, cells: list[Cell] | None = None,
                   seeds: list[int] | None = None) -> str:
    """The paper's Table 1 layout for the recipe's own setting: model (params) | BN e1 | ND e1 | ...;
    with both norms, each one's result at the other's training seconds; then, when ``cells`` hold a
    grid, the best setting per model, norm and budget, and every setting; with time budgets, the
    equal-time tables; and the time each norm took to reach a few accuracies."""
    over = f", mean of seeds {', '.join(map(str, seeds))}" if seeds else ""
    label = _metric(cells or [])[1]
    by_epochs = _by_epochs(cells or [])
    lines = [f"**{title}** (validation {label}, %{over})", ""]
    if rows:
        head = ["model (params)"] + [f"{n} {e} ep" for e in budgets for n in ("BN", "ND")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells_ = [f"{row['model']} ({_fmt(row['params_M'])}M)", *_accuracy_cells(row, budgets, "**{}**")]
            lines.append("| " + " | ".join(cells_) + " |")
        seconds = ", ".join(f"{row['model']} {e} ep: BN {_fmt(row[f'BN_{e}ep_seconds'])} s, "
                            f"ND {_fmt(row[f'ND_{e}ep_seconds'])} s" for row in rows for e in budgets)
        lines += ["", f"Training seconds (validation not counted): {seconds}.", ""]
        lines += _equal_seconds_lines(cells or [], label)
    elif by_epochs or not cells:
        lines += ["No run used the recipe's own setting (the paper's protocol) for every grid key.", ""]
    if any(c.setting for c in by_epochs):
        lines += ["**Best setting of the grid** (the recipe's own setting is the paper's protocol)", "",
                  "| model | norm | epochs | protocol | best | best setting |", "|---|---|---|---|---|---|"]
        lines += [f"| {b['model']} | {b['norm']} | {b['epochs']} | {_fmt(b['protocol'])} | "
                  f"{_fmt(b['best']) if b['setting'] else '-'} | {b['setting'] or 'every setting diverged'} |"
                  for b in best_rows(by_epochs)]
        lines += ["", f"**Every setting** ({label} %, mean over its runs; training seconds per run)", "",
                  f"| model | norm | epochs | setting | {label} | runs | seconds |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['norm']} | {r['epochs']} | {r['setting']}{' (protocol)' * r['protocol']} | "
                  f"{_fmt(r['accuracy'])} | {r['runs']} | {r['seconds']:.1f} |" for r in setting_rows(by_epochs)]
        lines.append("")
    if _by_time(cells or []):
        lines += _equal_time_lines(cells, label)
    if cells:
        lines += _time_to_accuracy_lines(cells, label)
    return "\n".join(lines)


def table_csv(cells: list[Cell]) -> str:
    """Every run: model, norm, epochs (and time budget, steps and training seconds when there are
    budgets), seed, the grid keys, the headline metric (%), seconds, parameters, run directory."""
    keys = list(dict.fromkeys(k for c in cells for k, _ in c.setting))
    timed = bool(_by_time(cells))
    metric = _metric(cells)[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "norm", "epochs", *(["budget", "steps", "train_seconds"] if timed else []), "seed",
                     *keys, "protocol", metric, "seconds", "params_M", "run_dir"])
    for c in cells:
        values = dict(c.setting)
        budget = [c.budget or "", c.results.get("steps") or "", round(_train_seconds(c.results), 1)] if timed else []
        writer.writerow([c.model, LABEL[c.norm], c.epochs, *budget, "" if c.seed is None else c.seed,
                         *(values.get(k, "") for k in keys), int(c.protocol), _fmt(_pct(c.results[metric])),
                         round(c.results["seconds"], 1), round(c.results["params"] / 1e6, 2), c.run_dir.name])
    return buf.getvalue()


def rich_table(rows: list[dict], budgets: list[int], title: str) -> Table:
    table = Table(title=title)
    table.add_column("model (params)")
    for e in budgets:
        for n in ("BN", "ND"):
            table.add_column(f"{n} {e} ep", justify="right")
    for row in rows:
        table.add_row(f"{row['model']} ({_fmt(row['params_M'])}M)",
                      *_accuracy_cells(row, budgets, "[bold]{}[/bold]"))
    return table


def equal_time_table(cells: list[Cell], title: str) -> Table:
    """The equal-time comparison for the terminal: each norm's best setting per model and time budget."""
    table = Table(title=f"{title}: equal training time")
    for column in ("model", "budget", "BN", "BN setting", "ND", "ND setting", "ND - BN"):
        table.add_column(column, justify="left" if "setting" in column or column == "model" else "right")
    for r in equal_time_rows(cells):
        lead = "-" if r["lead"] is None else f"{r['lead']:+.2f}"
        table.add_row(r["model"], r["budget"], _fmt(r.get("BN", "")), r.get("BN_setting", "-"),
                      _fmt(r.get("ND", "")), r.get("ND_setting", "-"), lead)
    return table


def _plotted(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Per model, the runs a figure shows, one per norm: with time budgets each norm's best setting
    at the longest budget, else the protocol's run at the longest epoch budget (first seed)."""
    timed = _by_time(cells)
    shown: dict[str, list[Cell]] = {}
    for model in dict.fromkeys(c.model for c in cells):
        if timed:
            mine = [c for c in timed if c.model == model]
            longest = max(parse_budget(c.budget) for c in mine)
            pool = [c for c in mine if parse_budget(c.budget) == longest]
            best = equal_time_rows(pool)[0]
            picked = [next(c for c in pool if c.norm == n and c.label == best[f"{LABEL[n]}_setting"])
                      for n in NORMS if f"{LABEL[n]}_setting" in best]
        else:
            mine = [c for c in cells if c.model == model]
            mine = [c for c in mine if c.protocol] or mine
            longest = max(c.epochs for c in mine)
            picked = [next(c for c in mine if c.norm == n and c.epochs == longest) for n in NORMS
                      if any(c.norm == n and c.epochs == longest for c in mine)]
        shown[model] = picked
    return shown


def plot_curves(cells: list[Cell], path: Path, title: str) -> Path:
    """Validation accuracy (segmentation: mean IoU) per epoch (top) and per training second, validation
    left out (bottom), BN (dashed) vs ND (solid), one column per model (see :func:`_plotted`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric, label = _metric(cells)
    shown = _plotted(cells)
    fig, axes = plt.subplots(2, len(shown), figsize=(max(4.2 * len(shown), 6.0), 6.4), squeeze=False)
    for col, (model, picked) in enumerate(shown.items()):
        for cell in picked:
            curve = accuracy_curve(cell.run_dir, metric)
            acc = [a for _, a in curve]
            name = LABEL[cell.norm] if cell.budget is None else f"{LABEL[cell.norm]} ({cell.label})"
            style = dict(marker="o", linestyle="--" if cell.norm == "bn" else "-",
                         color="tab:gray" if cell.norm == "bn" else "tab:red", label=name)
            axes[0, col].plot(range(1, len(acc) + 1), acc, **style)
            axes[1, col].plot([t for t, _ in curve], acc, **style)
        epochs = max((len(accuracy_curve(c.run_dir, metric)) for c in picked), default=1)
        axes[0, col].set_title(model if picked[0].budget is None else f"{model}, {picked[0].budget} budget")
        axes[0, col].set_xlabel("epoch")
        axes[0, col].set_xlim(0.5, epochs + 0.5)
        axes[0, col].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes[1, col].set_xlabel("training seconds")
        axes[1, col].set_xlim(left=0)
        for ax in axes[:, col]:
            ax.set_ylabel(f"validation {label} (%)")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def write_outputs(cells: list[Cell], budgets: list[int], out: Path, title: str,
                  seeds: list[int] | None = None) -> list[dict]:
    """``table.md``, ``table.csv`` and ``curves.png`` in ``out``; returns the protocol table's rows."""
    rows = table_rows(cells, budgets)
    write_text(out / "table.md", table_markdown(rows, budgets, title, cells, seeds))
    write_text(out / "table.csv", table_csv(cells))
    plot_curves(cells, out / "curves.png", title)
    return rows
