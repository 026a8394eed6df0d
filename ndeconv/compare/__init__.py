"""``ndeconv compare``: BN vs deconvolution for several models and lengths, as the paper's Table 1.

Every (model, length, norm) is its own run directory under the comparison's output directory,
trained with a fresh schedule for that length (an epoch count, or a time budget that the run turns
into steps). A grid over any recipe keys (``{"optim.lr": ["0.1", "0.03"]}``) and several seeds
multiply the cells; BN cells ignore ``model.deconv.*`` keys (they do not change a BN model), so
they are trained once per remaining setting. Finished runs are reused and interrupted ones
resumed, so a comparison that stopped picks up where it was (:mod:`.grid`).

Outputs: ``table.csv`` keeps every run; ``table.md`` shows the paper's Table 1 layout for the
recipe's own setting (the paper's protocol) averaged over seeds and, with a grid, the best
setting per model, norm and length (:mod:`.rows`, :mod:`.report`); ``curves.png`` plots the
validation metric against epochs and against training seconds (:mod:`.plot`).
"""

from __future__ import annotations

from pathlib import Path

from ..outputs import write_text
from .grid import DEFAULT_NORMS, LABEL, NORMS, Cell, parse_grid, run_comparison
from .plot import plot_curves
from .report import equal_time_table, rich_table, table_csv, table_markdown
from .rows import (accuracy_curve, best_rows, diverged, equal_seconds_rows, equal_time_rows, lead, norm_labels,
                   setting_rows, table_rows, time_to_accuracy_rows)

__all__ = ["Cell", "NORMS", "DEFAULT_NORMS", "LABEL", "parse_grid", "run_comparison", "table_rows", "setting_rows",
           "best_rows", "equal_time_rows", "lead", "norm_labels", "accuracy_curve", "equal_seconds_rows",
           "time_to_accuracy_rows", "diverged", "table_markdown", "table_csv", "rich_table", "equal_time_table",
           "plot_curves", "write_outputs"]


def write_outputs(cells: list[Cell], epochs: list[int], out: Path, title: str,
                  seeds: list[int] | None = None) -> list[dict]:
    """``table.md``, ``table.csv`` and ``curves.png`` in ``out`` (the protocol table for the ``epochs``
    counts); returns the protocol table's rows."""
    rows = table_rows(cells, epochs)
    write_text(out / "table.md", table_markdown(rows, epochs, title, cells, seeds))
    write_text(out / "table.csv", table_csv(cells))
    plot_curves(cells, out / "curves.png", title)
    return rows
