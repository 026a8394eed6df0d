"""``ndeconv compare``: BN vs deconvolution for several models and epoch budgets, as the paper's Table 1.

Every (model, budget, norm) is its own run directory under the comparison's output directory,
trained with a fresh schedule for that budget. Finished runs are reused and interrupted ones
resumed, so a comparison that stopped picks up where it was.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from .errors import RunDirError
from .io import atomic_write, write_text
from .recipe import Recipe, apply_override, parse_recipe
from .train.checkpoint import read_metrics
from .train.run import CONFIG, RESULTS, resume, train

__all__ = ["Cell", "run_comparison", "table_rows", "table_markdown", "table_csv", "plot_curves"]

NORMS = ("bn", "deconv")
LABEL = {"bn": "BN", "deconv": "ND"}


@dataclass
class Cell:
    """One finished run of the comparison."""

    model: str
    norm: str
    epochs: int
    run_dir: Path
    results: dict


def _run_name(model: str, norm: str, epochs: int) -> str:
    return f"{model}-{norm}-{epochs}ep"


def _variant(recipe: Recipe, model: str, norm: str, epochs: int) -> Recipe:
    for key, value in (("model.name", model), ("model.norm", norm), ("train.epochs", epochs)):
        recipe = apply_override(recipe, key, value, source="compare")
    return recipe


def _run_one(recipe: Recipe, run_dir: Path, console: Console | None, progress: bool) -> dict:
    """Train ``recipe`` into ``run_dir``, reusing a finished run and resuming an interrupted one."""
    if (run_dir / CONFIG).is_file():
        existing = parse_recipe(yaml.safe_load((run_dir / CONFIG).read_text()), str(run_dir / CONFIG))
        if existing != recipe:
            raise RunDirError(f"{run_dir}: holds a run with different settings; use another --out")
        if (run_dir / RESULTS).is_file():
            return json.loads((run_dir / RESULTS).read_text())
        if (run_dir / "checkpoint.pth").is_file():
            return resume(run_dir, console=console, progress=progress)[1]
        raise RunDirError(f"{run_dir}: interrupted before its first epoch ended; delete it to start again")
    return train(recipe, run_dir, console=console, progress=progress)[1]


def run_comparison(recipe: Recipe, models: list[str], budgets: list[int], out: Path,
                   console: Console | None = None, progress: bool = True) -> list[Cell]:
    """Train (or reuse) every model x budget x {BN, ND} under ``out``; the cells in table order."""
    cells = []
    for model in models:
        for epochs in budgets:
            for norm in NORMS:
                run_dir = out / _run_name(model, norm, epochs)
                variant = _variant(recipe, model, norm, epochs)
                if console is not None:
                    console.print(f"[bold]{model}[/bold] {LABEL[norm]} {epochs} epoch(s) -> {run_dir}",
                                  highlight=False)
                results = _run_one(variant, run_dir, console, progress)
                cells.append(Cell(model, norm, epochs, run_dir, results))
    return cells


def table_rows(cells: list[Cell], budgets: list[int]) -> list[dict]:
    """One row per model: parameters (of the deconvolution model, as the paper counted) and accuracies in %."""
    rows: dict[str, dict] = {}
    for cell in cells:
        row = rows.setdefault(cell.model, {"model": cell.model})
        if cell.norm == "deconv":
            row["params_M"] = round(cell.results["params"] / 1e6, 2)
        row[f"{LABEL[cell.norm]}_{cell.epochs}ep"] = round(100 * cell.results["accuracy"], 2)
        row[f"{LABEL[cell.norm]}_{cell.epochs}ep_seconds"] = round(cell.results["seconds"], 1)
    columns = ["model", "params_M"] + [f"{n}_{e}ep" for e in budgets for n in ("BN", "ND")] + \
        [f"{n}_{e}ep_seconds" for e in budgets for n in ("BN", "ND")]
    return [{c: row.get(c, "") for c in columns} for row in rows.values()]


def _accuracy_cells(row: dict, budgets: list[int], emphasis: str) -> list[str]:
    """BN and ND accuracies per budget, ND wrapped in ``emphasis`` where it beats BN."""
    cells = []
    for e in budgets:
        bn, nd = row[f"BN_{e}ep"], row[f"ND_{e}ep"]
        cells += [f"{bn:.2f}", emphasis.format(f"{nd:.2f}") if nd > bn else f"{nd:.2f}"]
    return cells


def table_markdown(rows: list[dict], budgets: list[int], title: str) -> str:
    """The paper's Table 1 layout: model (params) | BN e1 | ND e1 | BN e2 | ND e2 ..."""
    head = ["model (params)"] + [f"{n} {e} ep" for e in budgets for n in ("BN", "ND")]
    lines = [f"**{title}** (validation accuracy, %)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['model']} ({row['params_M']}M)", *_accuracy_cells(row, budgets, "**{}**")]
        lines.append("| " + " | ".join(cells) + " |")
    seconds = ", ".join(f"{row['model']} {e} ep: BN {row[f'BN_{e}ep_seconds']} s, ND {row[f'ND_{e}ep_seconds']} s"
                        for row in rows for e in budgets)
    return "\n".join(lines + ["", f"Training time: {seconds}.", ""])


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def rich_table(rows: list[dict], budgets: list[int], title: str) -> Table:
    table = Table(title=title)
    table.add_column("model (params)")
    for e in budgets:
        for n in ("BN", "ND"):
            table.add_column(f"{n} {e} ep", justify="right")
    for row in rows:
        table.add_row(f"{row['model']} ({row['params_M']}M)", *_accuracy_cells(row, budgets, "[bold]{}[/bold]"))
    return table


def plot_curves(cells: list[Cell], path: Path, title: str) -> Path:
    """Validation accuracy per epoch, BN (dashed) vs ND (solid), one panel per model (its longest budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    models = list(dict.fromkeys(c.model for c in cells))
    longest = {m: max(c.epochs for c in cells if c.model == m) for m in models}
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for cell in cells:
            if cell.model != model or cell.epochs != longest[model]:
                continue
            rows = read_metrics(cell.run_dir / "metrics.csv")
            epochs = [r["epoch"] for r in rows]
            acc = [100 * r["accuracy"] for r in rows]
            style = dict(marker="o", linestyle="--" if cell.norm == "bn" else "-",
                         color="tab:gray" if cell.norm == "bn" else "tab:red")
            ax.plot(epochs, acc, label=LABEL[cell.norm], **style)
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def write_outputs(cells: list[Cell], budgets: list[int], out: Path, title: str) -> list[dict]:
    """``table.md``, ``table.csv`` and ``curves.png`` in ``out``; returns the table rows."""
    rows = table_rows(cells, budgets)
    write_text(out / "table.md", table_markdown(rows, budgets, title))
    write_text(out / "table.csv", table_csv(rows))
    plot_curves(cells, out / "curves.png", title)
    return rows
