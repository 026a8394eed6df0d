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
"""

from __future__ import annotations

import csv
import io
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from .errors import RecipeError, RunDirError
from .io import atomic_write, write_text
from .recipe import HEADLINE, Recipe, apply_override, parse_recipe, recipe_to_dict
from .train.checkpoint import read_metrics
from .train.run import CONFIG, resume, train

__all__ = ["Cell", "parse_grid", "run_comparison", "table_rows", "setting_rows", "best_rows", "table_markdown",
           "table_csv", "plot_curves", "write_outputs"]

NORMS = ("bn", "deconv")
LABEL = {"bn": "BN", "deconv": "ND"}
BN_IGNORES = "model.deconv."

Setting = tuple[tuple[str, str], ...]


@dataclass
class Cell:
    """One finished run of the comparison: its grid ``setting`` (key, value as given) and seed."""

    model: str
    norm: str
    epochs: int
    run_dir: Path
    results: dict
    setting: Setting = ()
    seed: int | None = None
    protocol: bool = True

    @property
    def label(self) -> str:
        """The setting as ``key=value, ...`` (``recipe`` when there is none)."""
        return ", ".join(f"{k}={v}" for k, v in self.setting) or "recipe"


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["optim.lr=0.1,0.03", ...]`` -> ``{"optim.lr": ["0.1", "0.03"]}`` (values checked later)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not options:
            raise RecipeError(f"--grid {item}: expected key.sub=value1,value2,...")
        if key in grid:
            raise RecipeError(f"--grid {key}: given twice")
        if len(set(options)) != len(options):
            raise RecipeError(f"--grid {item}: a value is repeated")
        grid[key] = options
    return grid


def _run_name(model: str, norm: str, epochs: int, setting: Setting = (), seed: int | None = None) -> str:
    name = f"{model}-{norm}-{epochs}ep" + "".join(f"-{k}={v}" for k, v in setting)
    return name.replace("/", "_") + ("" if seed is None else f"-seed{seed}")


def _get(recipe: Recipe, key: str) -> Any:
    node: Any = recipe_to_dict(recipe)
    for part in key.split("."):
        node = node[part]
    return node


def _variant(recipe: Recipe, model: str, norm: str, epochs: int, setting: Setting = (),
             seed: int | None = None) -> Recipe:
    fixed = [("model.name", model), ("model.norm", norm), ("train.epochs", epochs)]
    if seed is not None:
        fixed.append(("train.seed", seed))
    for key, value in fixed:
        recipe = apply_override(recipe, key, value, source="compare")
    for key, value in setting:
        recipe = apply_override(recipe, key, value, source=f"--grid {key}={value}")
    return recipe


def _is_protocol(base: Recipe, variant: Recipe, setting: Setting) -> bool:
    """Whether every grid key keeps the recipe's own value (the paper's protocol)."""
    return all(_get(variant, key) == _get(base, key) for key, _ in setting)


def _run_one(recipe: Recipe, run_dir: Path, console: Console | None, progress: bool) -> dict:
    """Train ``recipe`` into ``run_dir``, reusing a finished run and resuming an interrupted one."""
    if (run_dir / CONFIG).is_file():
        existing = parse_recipe(yaml.safe_load((run_dir / CONFIG).read_text()), str(run_dir / CONFIG))
        if existing != recipe:
            raise RunDirError(f"{run_dir}: holds a run with different settings; use another --out")
        return resume(run_dir, console=console, progress=progress)[1]  # finished runs return their results
    return train(recipe, run_dir, console=console, progress=progress)[1]


def _plan(recipe: Recipe, models: list[str], budgets: list[int], out: Path, grid: dict[str, list[str]],
          seeds: list[int] | None, norms: Sequence[str]) -> list[tuple[Cell, Recipe]]:
    """Every cell to run, its recipe built (so a bad grid key or value fails before any training)."""
    plan: dict[Path, tuple[Cell, Recipe]] = {}
    settings = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]
    for model, epochs, norm, setting, seed in itertools.product(models, budgets, norms, settings, seeds or [None]):
        if norm == "bn":
            setting = tuple((k, v) for k, v in setting if not k.startswith(BN_IGNORES))
        run_dir = out / _run_name(model, norm, epochs, setting, seed)
        if run_dir not in plan:
            variant = _variant(recipe, model, norm, epochs, setting, seed)
            cell = Cell(model, norm, epochs, run_dir, {}, setting, seed, _is_protocol(recipe, variant, setting))
            plan[run_dir] = (cell, variant)
    return list(plan.values())


def run_comparison(recipe: Recipe, models: list[str], budgets: list[int], out: Path,
                   console: Console | None = None, progress: bool = True, grid: dict[str, list[str]] | None = None,
                   seeds: list[int] | None = None, norms: Sequence[str] = NORMS) -> list[Cell]:
    """Train (or reuse) every model x budget x norm x grid setting x seed under ``out``; the cells in order."""
    unknown = [n for n in norms if n not in NORMS]
    if unknown or not norms:
        raise RecipeError(f"--norms: choose from {', '.join(NORMS)}, got {', '.join(norms) or 'nothing'}")
    cells = []
    for cell, variant in _plan(recipe, models, budgets, out, grid or {}, seeds, norms):
        if console is not None:
            seed = "" if cell.seed is None else f" seed {cell.seed}"
            console.print(f"[bold]{cell.model}[/bold] {LABEL[cell.norm]} {cell.epochs} epoch(s) "
                          f"{cell.label}{seed} -> {cell.run_dir}", highlight=False)
        cell.results = _run_one(variant, cell.run_dir, console, progress)
        cells.append(cell)
    return cells


def _metric(cells: list[Cell]) -> tuple[str, str]:
    """The headline metric of the cells' task (accuracy, or mean IoU for segmentation): key and label."""
    key = cells[0].results.get("score", "accuracy") if cells else "accuracy"
    return key, dict(HEADLINE.values()).get(key, key)


def _mean(cells: list[Cell], key: str) -> float:
    """Mean of ``key`` over the cells' results; ``score`` is the headline metric."""
    return statistics.fmean(c.results[_metric([c])[0] if key == "score" else key] for c in cells)


def _groups(cells: list[Cell]) -> dict[tuple, list[Cell]]:
    """Cells that differ only in their seed, keyed by (model, norm, epochs, setting)."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.norm, cell.epochs, cell.setting), []).append(cell)
    return groups


def table_rows(cells: list[Cell], budgets: list[int]) -> list[dict]:
    """The paper's protocol, one row per model: parameters (of the deconvolution model, as the
    paper counted) and accuracies in % (mean over seeds) with training seconds."""
    rows: dict[str, dict] = {}
    for (model, norm, epochs, _), group in _groups([c for c in cells if c.protocol]).items():
        row = rows.setdefault(model, {"model": model})
        if norm == "deconv":
            row["params_M"] = round(group[0].results["params"] / 1e6, 2)
        row[f"{LABEL[norm]}_{epochs}ep"] = round(100 * _mean(group, "score"), 2)
        row[f"{LABEL[norm]}_{epochs}ep_seconds"] = round(_mean(group, "seconds"), 1)
    columns = ["model", "params_M"] + [f"{n}_{e}ep" for e in budgets for n in ("BN", "ND")] + \
        [f"{n}_{e}ep_seconds" for e in budgets for n in ("BN", "ND")]
    return [{c: row.get(c, "") for c in columns} for row in rows.values()]


def setting_rows(cells: list[Cell]) -> list[dict]:
    """Per model, norm, budget and grid setting: mean accuracy (%) and seconds over its seeds."""
    return [{"model": model, "norm": LABEL[norm], "epochs": epochs, "setting": group[0].label,
             "protocol": group[0].protocol, "accuracy": round(100 * _mean(group, "score"), 2),
             "runs": len(group), "seconds": round(_mean(group, "seconds"), 1)}
            for (model, norm, epochs, _), group in _groups(cells).items()]


def best_rows(cells: list[Cell]) -> list[dict]:
    """Per model, norm and budget: the protocol's accuracy and the best grid setting's (means over seeds, %)."""
    best: dict[tuple, dict] = {}
    for row in setting_rows(cells):
        entry = best.setdefault((row["model"], row["norm"], row["epochs"]),
                                {**{k: row[k] for k in ("model", "norm", "epochs")}, "protocol": "", "best": -1.0,
                                 "setting": ""})
        if row["protocol"]:
            entry["protocol"] = row["accuracy"]
        if row["accuracy"] > entry["best"]:
            entry.update(best=row["accuracy"], setting=row["setting"])
    return list(best.values())


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else (str(value) if value != "" else "-")


def _accuracy_cells(row: dict, budgets: list[int], emphasis: str) -> list[str]:
    """BN and ND accuracies per budget, ND wrapped in ``emphasis`` where it beats BN."""
    cells = []
    for e in budgets:
        bn, nd = row[f"BN_{e}ep"], row[f"ND_{e}ep"]
        wins = isinstance(bn, float) and isinstance(nd, float) and nd > bn
        cells += [_fmt(bn), emphasis.format(_fmt(nd)) if wins else _fmt(nd)]
    return cells


def table_markdown(rows: list[dict], budgets: list[int], title: str, cells: list[Cell] | None = None,
                   seeds: list[int] | None = None) -> str:
    """The paper's Table 1 layout for the recipe's own setting: model (params) | BN e1 | ND e1 | ...;
    then, when ``cells`` hold a grid, the best setting per model, norm and budget, and every setting."""
    over = f", mean of seeds {', '.join(map(str, seeds))}" if seeds else ""
    label = _metric(cells or [])[1]
    lines = [f"**{title}** (validation {label}, %{over})", ""]
    if rows:
        head = ["model (params)"] + [f"{n} {e} ep" for e in budgets for n in ("BN", "ND")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells_ = [f"{row['model']} ({_fmt(row['params_M'])}M)", *_accuracy_cells(row, budgets, "**{}**")]
            lines.append("| " + " | ".join(cells_) + " |")
        seconds = ", ".join(f"{row['model']} {e} ep: BN {_fmt(row[f'BN_{e}ep_seconds'])} s, "
                            f"ND {_fmt(row[f'ND_{e}ep_seconds'])} s" for row in rows for e in budgets)
        lines += ["", f"Training time: {seconds}.", ""]
    else:
        lines += ["No run used the recipe's own setting (the paper's protocol) for every grid key.", ""]
    if cells and any(c.setting for c in cells):
        lines += ["**Best setting of the grid** (the recipe's own setting is the paper's protocol)", "",
                  "| model | norm | epochs | protocol | best | best setting |", "|---|---|---|---|---|---|"]
        lines += [f"| {b['model']} | {b['norm']} | {b['epochs']} | {_fmt(b['protocol'])} | {b['best']:.2f} | "
                  f"{b['setting']} |" for b in best_rows(cells)]
        lines += ["", f"**Every setting** ({label} %, mean over its runs; training seconds per run)", "",
                  f"| model | norm | epochs | setting | {label} | runs | seconds |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['norm']} | {r['epochs']} | {r['setting']}{' (protocol)' * r['protocol']} | "
                  f"{r['accuracy']:.2f} | {r['runs']} | {r['seconds']:.1f} |" for r in setting_rows(cells)]
        lines.append("")
    return "\n".join(lines)


def table_csv(cells: list[Cell]) -> str:
    """Every run: model, norm, epochs, seed, the grid keys, the headline metric (%), seconds, parameters,
    run directory."""
    keys = list(dict.fromkeys(k for c in cells for k, _ in c.setting))
    metric = _metric(cells)[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "norm", "epochs", "seed", *keys, "protocol", metric, "seconds", "params_M",
                     "run_dir"])
    for c in cells:
        values = dict(c.setting)
        writer.writerow([c.model, LABEL[c.norm], c.epochs, "" if c.seed is None else c.seed,
                         *(values.get(k, "") for k in keys), int(c.protocol), round(100 * c.results[metric], 2),
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


def plot_curves(cells: list[Cell], path: Path, title: str) -> Path:
    """Validation accuracy (segmentation: mean IoU) per epoch (top) and per training second (bottom),
    BN (dashed) vs ND (solid), one column per model: its longest budget, protocol setting, first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [c for c in cells if c.protocol] or cells
    metric, label = _metric(shown)
    models = list(dict.fromkeys(c.model for c in shown))
    longest = {m: max(c.epochs for c in shown if c.model == m) for m in models}
    fig, axes = plt.subplots(2, len(models), figsize=(max(4.2 * len(models), 6.0), 6.4), squeeze=False)
    for col, model in enumerate(models):
        drawn: set[str] = set()
        for cell in shown:
            if cell.model != model or cell.epochs != longest[model] or cell.norm in drawn:
                continue
            drawn.add(cell.norm)
            rows = read_metrics(cell.run_dir / "metrics.csv")
            acc = [100 * r[metric] for r in rows]
            seconds = list(itertools.accumulate(r["seconds"] for r in rows))
            style = dict(marker="o", linestyle="--" if cell.norm == "bn" else "-",
                         color="tab:gray" if cell.norm == "bn" else "tab:red", label=LABEL[cell.norm])
            axes[0, col].plot([r["epoch"] for r in rows], acc, **style)
            axes[1, col].plot(seconds, acc, **style)
        axes[0, col].set_title(model)
        axes[0, col].set_xlabel("epoch")
        axes[0, col].set_xlim(0.5, longest[model] + 0.5)
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
