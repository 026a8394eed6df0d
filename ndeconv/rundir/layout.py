"""A run directory's files, the order a run writes them in, and reading the plain ones back.

``RUN_DIR/`` holds, in the order a run writes them: ``config.yaml`` (the resolved recipe, with a
budgeted run's calibrated steps) and ``launch.json`` (its process count) when it starts;
``metrics.csv`` (a row per epoch) and ``checkpoint.pth`` (model, optimizer, RNG states) after
every epoch; and once training finished ``model.safetensors``, the model card ``README.md`` and
``results.json``, which comes last: its presence marks a finished run. ``.lock`` exists while a
run writes there, ``logs/`` with trackers. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, TypedDict

import yaml

from ..errors import RunDirError, first_line
from ..recipe import Recipe, parse_recipe, read_text_file, read_yaml

__all__ = ["CONFIG", "LAUNCH", "METRICS", "CHECKPOINT", "WEIGHTS", "CARD", "RESULTS", "LOCK", "LOG_DIR",
           "WRITING_ORDER", "LOCAL_ONLY", "RunResults", "is_finished", "read_results", "load_run_recipe",
           "rows_to_csv", "read_metrics"]

CONFIG = "config.yaml"
LAUNCH = "launch.json"
METRICS = "metrics.csv"
CHECKPOINT = "checkpoint.pth"
WEIGHTS = "model.safetensors"
CARD = "README.md"
RESULTS = "results.json"
LOCK = ".lock"
LOG_DIR = "logs"

#: The files of a run in the order it writes them: one's presence implies those before it.
WRITING_ORDER = (CONFIG, LAUNCH, METRICS, CHECKPOINT, WEIGHTS, CARD, RESULTS)
#: What stays on this machine when a run is shared: the resume checkpoint (large, and only for
#: resuming) and the lock.
LOCAL_ONLY = (CHECKPOINT, LOCK)


class RunResults(TypedDict, total=False):
    """What ``results.json`` holds (written by :func:`ndeconv.train.train`, read by compare, the model
    card, the hub and the command line). The headline metric is under its own name, ``score`` says
    which (``accuracy``, ``miou``), with ``best_<score>`` and the task's other metrics
    (``accuracy_no_tta`` with test-time augmentation) beside it."""

    recipe: str
    model: str
    norm: str
    task: str
    status: str  # finished, or diverged (with ``diverged``: epoch, step, lr, what)
    score: str
    epochs: int
    valid_loss: float | None
    train_loss: float | None
    seconds: float  # the epochs' seconds, validation included
    train_seconds: float  # validation not counted
    budget: str | float | None
    steps: int | None
    step_seconds: float | None
    params: int
    train_images: int | None
    classes: list[str] | None  # the labels' names, where the data had them
    world_size: int
    precision: str
    sync_stats: bool
    device: str
    ndeconv: str
    torch: str
    python: str
    diverged: dict[str, Any]


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run in ``run_dir`` finished (or diverged): it wrote its ``results.json``."""
    return (Path(run_dir) / RESULTS).is_file()


def read_results(run_dir: str | Path) -> RunResults:
    """A finished run's ``results.json``; a damaged one is a :class:`RunDirError` naming it."""
    path = Path(run_dir) / RESULTS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable results ({first_line(e, 200)})") from None


def load_run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe a run directory was trained with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    config = run_dir / CONFIG
    if not config.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        return parse_recipe(read_yaml(read_text_file(config, "run's config.yaml")), str(config))
    except yaml.YAMLError as e:
        raise RunDirError(f"{config}: damaged, not valid YAML ({getattr(e, 'problem', e)})") from None


def rows_to_csv(rows: list[dict]) -> str:
    """Rows of a metrics table as CSV text with a header (the columns of the first row)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["epoch"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_metrics(path: Path) -> list[dict]:
    """``metrics.csv`` back as rows of numbers."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
