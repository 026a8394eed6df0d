"""A comparison's curves: validation metric per epoch and per training second, one line per norm."""

from __future__ import annotations

from pathlib import Path

from ..outputs import pyplot, save_figure
from ..recipe import parse_budget
from .grid import LABEL, NORMS, Cell
from .rows import _by_time, _metric, accuracy_curve, equal_time_rows

__all__ = ["plot_curves"]

#: Each norm's line: ND solid red, the others dashed in their own colours.
_STYLE = {"bn": dict(linestyle="--", color="tab:gray"), "gn": dict(linestyle="-.", color="tab:blue"),
          "deconv": dict(linestyle="-", color="tab:red"), "none": dict(linestyle=":", color="black")}


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
    left out (bottom), ND (solid red) against each other norm (BN dashed grey, GN blue, none dotted
    black), one column per model (see :func:`_plotted`)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    metric, label = _metric(cells)
    shown = _plotted(cells)
    fig, axes = plt.subplots(2, len(shown), figsize=(max(4.2 * len(shown), 6.0), 6.4), squeeze=False)
    for col, (model, picked) in enumerate(shown.items()):
        for cell in picked:
            curve = accuracy_curve(cell.run_dir, metric)
            acc = [a for _, a in curve]
            name = LABEL[cell.norm] if cell.budget is None else f"{LABEL[cell.norm]} ({cell.label})"
            style = dict(marker="o", **_STYLE[cell.norm], label=name)
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
    save_figure(fig, path)
    return path
