"""Experiment tracking through Accelerate's trackers (TensorBoard, trackio, wandb, mlflow, ...).

``train.log_with`` in a recipe names the trackers; the
:class:`TrackerCallback` logs per step (training loss, learning rate) and per epoch (the row
``metrics.csv`` gets: losses, accuracy, seconds) through ``accelerator.log``, which only the
main process carries out. Trackers that write files (TensorBoard) write under ``RUN_DIR/logs``.
"""

from __future__ import annotations

from fastai.callback.core import Callback

from ..errors import RecipeError
from ..recipe import Recipe, recipe_to_dict
from ..rundir import LOG_DIR

__all__ = ["check_trackers", "flat_config", "TrackerCallback"]


def check_trackers(names: list[str]) -> list[str]:
    """``names`` if Accelerate knows each tracker and its package is installed, else a ``RecipeError``."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise RecipeError(f"train.log_with: unknown tracker '{name}' (Accelerate has: "
                              f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
        if name not in available:
            raise RecipeError(f"train.log_with: tracker '{name}' is not installed (pip install {name})")
    return list(names)


def flat_config(recipe: Recipe) -> dict[str, int | float | str | bool]:
    """The recipe as ``{"optim.lr": 0.1, ...}`` with scalar values, as trackers' hyperparameter tables want."""
    flat: dict[str, int | float | str | bool] = {}

    def visit(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(f"{prefix}.{key}" if prefix else key, value)
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    visit("", recipe_to_dict(recipe))
    return flat


class TrackerCallback(Callback):
    """Send the training's numbers to the accelerator's trackers: ``train/loss`` and ``train/lr`` at
    every step (step = iterations since the start of the run, resumes included) and ``epoch/*`` with
    the run directory's row for the epoch (step = epoch)."""

    order = 71  # after RunDirCallback has made the epoch's row

    def __init__(self, accelerator, config: dict | None = None):
        self.accelerator, self.config = accelerator, config or {}

    def _rows(self) -> list[dict]:
        return getattr(getattr(self.learn, "run_dir", None), "rows", None) or []

    def before_fit(self) -> None:
        self.accelerator.init_trackers(LOG_DIR, config=self.config)
        self._logged = len(self._rows())  # a resumed run's earlier epochs were logged by the run that trained them

    def after_batch(self) -> None:
        if not self.training:
            return
        step = self.epoch * self.n_iter + self.iter + 1
        values = {"train/loss": float(self.loss.detach()), "train/lr": float(self.opt.hypers[-1]["lr"])}
        self.accelerator.log(values, step=step)

    def after_epoch(self) -> None:
        rows = self._rows()
        for row in rows[self._logged:]:  # the row this epoch made; none for an epoch skipped on resume
            self.accelerator.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        self._logged = len(rows)

    def after_fit(self) -> None:
        """Close the trackers (flushing their files); not ``end_training``, which also leaves the
        process group that the run's last steps still synchronise over."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
