"""The rows of a comparison's tables, from its cells: the paper's protocol per epoch count, every
setting, each norm's best, equal training time, equal seconds, time to accuracy."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..rundir import METRICS, read_metrics
from ..tasks import metric_label
from .grid import LABEL, NORMS, Cell

__all__ = ["norm_labels", "lead", "diverged", "table_rows", "setting_rows", "equal_time_rows", "accuracy_curve",
           "equal_seconds_rows", "time_to_accuracy_rows", "best_rows"]


def _metric(cells: list[Cell]) -> tuple[str, str]:
    """The headline metric of the cells' task (accuracy, or mean IoU for segmentation): key and label."""
    key = cells[0].results.get("score", "accuracy") if cells else "accuracy"
    return key, metric_label(key)


def norm_labels(cells: list[Cell]) -> list[str]:
    """The labels of the norms among ``cells`` (``BN``, ``GN``, ``ND``, ``none``), in that order."""
    present = {c.norm for c in cells}
    return [LABEL[n] for n in NORMS if n in present]


def lead(entry: dict) -> float | None:
    """ND's lead in points over the best other norm of ``entry`` (``{label: score}``; ``None`` without
    ND, without another norm, or where one of them diverged)."""
    others = [entry[n] for n in LABEL.values() if n != "ND" and n in entry]
    if entry.get("ND") is None or not others or None in others:
        return None
    return round(entry["ND"] - max(others), 2)


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


def _mean_train_seconds(cells: list[Cell]) -> float:
    """The cells' mean training seconds (validation not counted), to a tenth of a second."""
    return round(statistics.fmean(c.results["train_seconds"] for c in cells), 1)


def table_rows(cells: list[Cell], epochs: list[int]) -> list[dict]:
    """The paper's protocol at each of the ``epochs`` counts, one row per model: parameters (of the
    deconvolution model, as the paper counted; else the first norm's) and each norm's accuracy in %
    (mean over seeds, ``<label>_<e>ep``) with its training seconds (validation not counted)."""
    protocol = [c for c in _by_epochs(cells) if c.protocol]
    rows: dict[str, dict] = {}
    for (model, norm, count, _), group in _groups(protocol).items():
        row = rows.setdefault(model, {"model": model})
        if norm == "deconv" or "params_M" not in row:
            row["params_M"] = round(group[0].results["params"] / 1e6, 2)
        row[f"{LABEL[norm]}_{count}ep"] = _pct(_mean(group, "score"))
        row[f"{LABEL[norm]}_{count}ep_seconds"] = _mean_train_seconds(group)
    names = norm_labels(protocol)
    columns = ["model", "params_M"] + [f"{n}_{e}ep" for e in epochs for n in names] + \
        [f"{n}_{e}ep_seconds" for e in epochs for n in names]
    return [{c: row.get(c, "") for c in columns} for row in rows.values()]


def setting_rows(cells: list[Cell]) -> list[dict]:
    """Per model, norm, length (epochs, or a time budget) and grid setting: the mean headline metric
    (``score``: accuracy, or mean IoU for segmentation, %), seconds (validation included), training
    seconds and optimizer steps over its seeds."""
    return [{"model": model, "norm": LABEL[norm], "length": length, "setting": group[0].label,
             "protocol": group[0].protocol, "score": _pct(_mean(group, "score")),
             "runs": len(group), "seconds": round(_mean(group, "seconds"), 1),
             "train_seconds": _mean_train_seconds(group),
             "steps": round(statistics.fmean(c.results.get("steps") or 0 for c in group))}
            for (model, norm, length, _), group in _groups(cells).items()]


def equal_time_rows(cells: list[Cell]) -> list[dict]:
    """Per model and time budget: each norm's best setting (mean over seeds, %), its training
    seconds, and ND's lead over the best other norm in points (:func:`lead`)."""
    rows: dict[tuple, dict] = {}
    for r in setting_rows(_by_time(cells)):
        entry = rows.setdefault((r["model"], r["length"]), {"model": r["model"], "budget": r["length"]})
        norm = r["norm"]
        if r["score"] is not None and r["score"] > entry.get(norm, -1.0):
            entry.update({norm: r["score"], f"{norm}_setting": r["setting"],
                          f"{norm}_seconds": r["train_seconds"], f"{norm}_steps": r["steps"]})
    for entry in rows.values():
        entry["lead"] = lead(entry)
    return list(rows.values())


def accuracy_curve(run_dir: Path, metric: str = "accuracy") -> list[tuple[float, float]]:
    """``(training seconds so far, headline metric in %)`` at every validation of a run (none for a
    run that diverged in its first epoch)."""
    if not (run_dir / METRICS).is_file():
        return []
    rows = read_metrics(run_dir / METRICS)
    seconds = itertools.accumulate(r["train_seconds"] for r in rows)
    return [(t, 100 * r[metric]) for t, r in zip(seconds, rows)]


def _at_seconds(curve: list[tuple[float, float]], seconds: float) -> tuple[float, float] | None:
    """The last validation of a curve at or before ``seconds`` of training: ``(its seconds, its metric)``."""
    return next((point for point in reversed(curve) if point[0] <= seconds), None)


def equal_seconds_rows(cells: list[Cell]) -> list[dict]:
    """Per model, epoch budget of the paper's protocol and norm ``other`` trained beside ND: each of
    the two norms' final accuracy (%) and training seconds, and the other one's accuracy at those
    seconds, read from its curve (its last validation by then; the mean over its seeds, ``None``
    where a seed had not validated yet). A norm that finished sooner holds its final accuracy from
    then on."""
    metric = _metric(cells)[0]
    finals: dict[tuple, dict[str, list[Cell]]] = {}
    for (model, norm, epochs, _), group in _groups([c for c in _by_epochs(cells) if c.protocol]).items():
        finals.setdefault((model, epochs), {})[LABEL[norm]] = group
    rows = []
    for (model, epochs), by_norm in finals.items():
        for base in [n for n in LABEL.values() if n in by_norm and n != "ND"] if "ND" in by_norm else []:
            row: dict = {"model": model, "epochs": epochs, "other": base}
            for name in (base, "ND"):
                row[name] = _pct(_mean(by_norm[name], "score"))
                row[f"{name}_seconds"] = _mean_train_seconds(by_norm[name])
            for name, other in ((base, "ND"), ("ND", base)):
                points = [_at_seconds(accuracy_curve(c.run_dir, metric), row[f"{other}_seconds"])
                          for c in by_norm[name]]
                reached = None not in points
                row[f"{name}_at_{other}"] = round(statistics.fmean(p[1] for p in points), 2) if reached else None
                row[f"{name}_at_{other}_seconds"] = (round(statistics.fmean(p[0] for p in points), 1) if reached
                                                     else None)
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
        entry = best.setdefault((row["model"], row["norm"], row["length"]),
                                {**{k: row[k] for k in ("model", "norm", "length")}, "protocol": "", "best": -1.0,
                                 "setting": ""})
        if row["protocol"]:
            entry["protocol"] = row["score"]
        if row["score"] is not None and row["score"] > entry["best"]:
            entry.update(best=row["score"], setting=row["setting"])
    return list(best.values())
