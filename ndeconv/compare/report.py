"""A comparison's report: the markdown tables, the CSV of every run, and the terminal's rich tables."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

from .grid import LABEL, Cell
from .rows import (_by_epochs, _by_time, _metric, _pct, best_rows, equal_seconds_rows, equal_time_rows,
                   norm_labels, setting_rows, time_to_accuracy_rows)

__all__ = ["table_markdown", "table_csv", "rich_table", "equal_time_table"]


def _fmt(value: Any) -> str:
    """A table cell: accuracies with two decimals, ``None`` (a diverged run) as ``diverged``."""
    if value is None:
        return "diverged"
    return f"{value:.2f}" if isinstance(value, float) else (str(value) if value != "" else "-")


def _row_labels(rows: list[dict], epochs: list[int]) -> list[str]:
    """The norms the protocol table's rows hold (:func:`~ndeconv.compare.table_rows`), in table order."""
    return [n for n in LABEL.values() if rows and epochs and f"{n}_{epochs[0]}ep" in rows[0]]


def _accuracy_cells(row: dict, epochs: list[int], names: list[str], emphasis: str) -> list[str]:
    """Each norm's result per epoch count, ND wrapped in ``emphasis`` where it beats every other norm."""
    cells = []
    for e in epochs:
        values = {n: row[f"{n}_{e}ep"] for n in names}
        nd, others = values.get("ND"), [v for n, v in values.items() if n != "ND"]
        wins = isinstance(nd, float) and bool(others) and all(isinstance(v, float) and v < nd for v in others)
        cells += [emphasis.format(_fmt(v)) if n == "ND" and wins else _fmt(v) for n, v in values.items()]
    return cells


def _lead_header(names: list[str]) -> str:
    """The lead column's header: ND against the one other norm, or against the best of several."""
    others = [n for n in names if n != "ND"]
    return f"ND - {others[0]}" if len(others) == 1 else "ND - best other"


def _seconds(value: Any) -> str:
    return "-" if value in (None, "") else f"{value:.1f}"


def _equal_time_lines(cells: list[Cell], label: str) -> list[str]:
    """The time-budget sections: each norm's best setting per budget, and every setting."""
    names = norm_labels(_by_time(cells))
    head = ["model", "budget", *(f"{n}{part}" for n in names for part in ("", " setting", " s")), _lead_header(names)]
    lines = [f"**Equal training time** (validation {label} %, each norm's best setting at each budget, mean over "
             "seeds; seconds of training without validation)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in equal_time_rows(cells):
        lead = "-" if r["lead"] is None else f"{r['lead']:+.2f}"
        norms = [f"{_fmt(r.get(n, ''))} | {r.get(f'{n}_setting', '-')} | {_seconds(r.get(f'{n}_seconds'))}"
                 for n in names]
        lines.append(f"| {r['model']} | {r['budget']} | {' | '.join(norms)} | {lead} |")
    lines += ["", f"**Every setting at each budget** ({label} %, mean over its runs; training seconds and optimizer "
                  "steps per run)", "",
              f"| model | norm | budget | setting | {label} | runs | training s | steps |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['norm']} | {r['length']} | {r['setting']}{' (protocol)' * r['protocol']} | "
              f"{_fmt(r['score'])} | {r['runs']} | {r['train_seconds']:.1f} | {r['steps']} |"
              for r in setting_rows(_by_time(cells))]
    return lines + [""]


def _time_to_accuracy_lines(cells: list[Cell], label: str) -> list[str]:
    names = norm_labels(cells)
    ratio = "BN" in names and "ND" in names
    head = ["model", "level", *(f"{n}{part}" for n in names for part in (" s", " run")), *["BN / ND"] * ratio]
    lines = [f"**Time to {label}** (training seconds until the validation {label} first reached the level: the "
             "fastest setting and length of each norm, mean over seeds; validated at every epoch's end and at a "
             "budget's end)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in time_to_accuracy_rows(cells):
        bn, nd = r.get("BN_seconds"), r.get("ND_seconds")
        norms = [f"{_seconds(r.get(f'{n}_seconds'))} | {r.get(f'{n}_run', 'not reached')}" for n in names]
        ratios = [f"{bn / nd:.2f}" if bn is not None and nd else "-"] * ratio
        lines.append("| " + " | ".join([r["model"], f"{r['level']:g}%", *norms, *ratios]) + " |")
    return lines + [""]


def _equal_seconds_lines(cells: list[Cell], label: str) -> list[str]:
    """The protocol's runs at equal training seconds: each norm's final result beside the other's at that time."""
    def at(row: dict, name: str, other: str) -> str:
        value = row[f"{name}_at_{other}"]
        return "no validation yet" if value is None else f"{value:.2f} ({row[f'{name}_at_{other}_seconds']:.1f} s)"

    rows = equal_seconds_rows(cells)
    if not rows:
        return []
    lines = [f"**At equal training seconds** (the paper's protocol: ND and each other norm, each one's final {label} "
             "% and training seconds, and the other one's at those seconds, its last validation by then with its "
             "own seconds)", "",
             "| model | epochs | norm | final | s | ND at its s | ND | ND s | norm at ND's s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['epochs']} | {r['other']} | {_fmt(r[r['other']])} | "
              f"{r[r['other'] + '_seconds']:.1f} | {at(r, 'ND', r['other'])} | {_fmt(r['ND'])} | "
              f"{r['ND_seconds']:.1f} | {at(r, r['other'], 'ND')} |" for r in rows]
    return lines + [""]


def table_markdown(rows: list[dict], epochs: list[int], title: str, cells: list[Cell] | None = None,
                   seeds: list[int] | None = None) -> str:
    """The paper's Table 1 layout for the recipe's own setting: model (params) | BN e1 | ND e1 | ...
    (every norm compared: BN, GN, ND, none); with ND and another norm, each one's result at the
    other's training seconds; then, when ``cells`` hold a
    grid, the best setting per model, norm and budget, and every setting; with time budgets, the
    equal-time tables; and the time each norm took to reach a few accuracies."""
    over = f", mean of seeds {', '.join(map(str, seeds))}" if seeds else ""
    label = _metric(cells or [])[1]
    by_epochs = _by_epochs(cells or [])
    lines = [f"**{title}** (validation {label}, %{over})", ""]
    if rows:
        names = _row_labels(rows, epochs)
        head = ["model (params)"] + [f"{n} {e} ep" for e in epochs for n in names]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells_ = [f"{row['model']} ({_fmt(row['params_M'])}M)", *_accuracy_cells(row, epochs, names, "**{}**")]
            lines.append("| " + " | ".join(cells_) + " |")
        seconds = ", ".join(f"{row['model']} {e} ep: " + ", ".join(f"{n} {_fmt(row[f'{n}_{e}ep_seconds'])} s"
                                                                   for n in names)
                            for row in rows for e in epochs)
        lines += ["", f"Training seconds (validation not counted): {seconds}.", ""]
        lines += _equal_seconds_lines(cells or [], label)
    elif by_epochs or not cells:
        lines += ["No run used the recipe's own setting (the paper's protocol) for every grid key.", ""]
    if any(c.setting for c in by_epochs):
        lines += ["**Best setting of the grid** (the recipe's own setting is the paper's protocol)", "",
                  "| model | norm | epochs | protocol | best | best setting |", "|---|---|---|---|---|---|"]
        lines += [f"| {b['model']} | {b['norm']} | {b['length']} | {_fmt(b['protocol'])} | "
                  f"{_fmt(b['best']) if b['setting'] else '-'} | {b['setting'] or 'every setting diverged'} |"
                  for b in best_rows(by_epochs)]
        lines += ["", f"**Every setting** ({label} %, mean over its runs; training seconds per run)", "",
                  f"| model | norm | epochs | setting | {label} | runs | seconds |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['norm']} | {r['length']} | {r['setting']}{' (protocol)' * r['protocol']} | "
                  f"{_fmt(r['score'])} | {r['runs']} | {r['seconds']:.1f} |" for r in setting_rows(by_epochs)]
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
        budget = [c.budget or "", c.results.get("steps") or "", round(c.results["train_seconds"], 1)] if timed else []
        writer.writerow([c.model, LABEL[c.norm], c.epochs, *budget, "" if c.seed is None else c.seed,
                         *(values.get(k, "") for k in keys), int(c.protocol), _fmt(_pct(c.results[metric])),
                         round(c.results["seconds"], 1), round(c.results["params"] / 1e6, 2), c.run_dir.name])
    return buf.getvalue()


def rich_table(rows: list[dict], epochs: list[int], title: str) -> Table:
    """The protocol table (:func:`table_rows`) for the terminal."""
    table = Table(title=title)
    table.add_column("model (params)")
    names = _row_labels(rows, epochs)
    for e in epochs:
        for n in names:
            table.add_column(f"{n} {e} ep", justify="right")
    for row in rows:
        table.add_row(f"{row['model']} ({_fmt(row['params_M'])}M)",
                      *_accuracy_cells(row, epochs, names, "[bold]{}[/bold]"))
    return table


def equal_time_table(cells: list[Cell], title: str) -> Table:
    """The equal-time comparison for the terminal: each norm's best setting per model and time budget."""
    table = Table(title=f"{title}: equal training time")
    names = norm_labels(_by_time(cells))
    for column in ("model", "budget", *(f"{n}{part}" for n in names for part in ("", " setting")),
                   _lead_header(names)):
        table.add_column(column, justify="left" if "setting" in column or column == "model" else "right")
    for r in equal_time_rows(cells):
        lead = "-" if r["lead"] is None else f"{r['lead']:+.2f}"
        norms = [value for n in names for value in (_fmt(r.get(n, "")), r.get(f"{n}_setting", "-"))]
        table.add_row(r["model"], r["budget"], *norms, lead)
    return table
