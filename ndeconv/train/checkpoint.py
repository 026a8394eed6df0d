"""What a run directory stores between epochs: checkpoints (model, optimizer, RNG) and the metrics table."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write

__all__ = ["CHECKPOINT", "METRICS", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
           "rows_to_csv", "read_metrics"]

CHECKPOINT = "checkpoint.pth"
METRICS = "metrics.csv"


def rng_state(learn) -> dict:
    """Every random state a resumed run needs to continue: torch, numpy, python, loaders, augmentation."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "train_dl": learn.dls.train.rng.getstate()}
    tfm = getattr(learn.dls.train, "after_batch", None)
    if hasattr(tfm, "generator"):
        state["augment"] = tfm.generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(learn, state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    learn.dls.train.rng.setstate(state["train_dl"])
    tfm = getattr(learn.dls.train, "after_batch", None)
    if "augment" in state and hasattr(tfm, "generator"):
        tfm.generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(learn, path: Path, epochs_done: int) -> None:
    """Model, optimizer, completed epochs, RNG state and the smoothed training loss in one
    atomically written file."""
    model = learn.model.module if hasattr(learn.model, "module") else learn.model
    smooth = learn.recorder.smooth_loss
    state = {"model": model.state_dict(), "opt": learn.opt.state_dict() if learn.opt else None,
             "epoch": epochs_done, "rng": rng_state(learn), "smooth_loss": (smooth.val, smooth.count)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(learn, path: Path) -> tuple[int, tuple | None]:
    """Restore a :func:`save_checkpoint` file into ``learn``; returns the completed epochs and the
    smoothed loss's state ``(val, count)``, which the Recorder resets when a fit starts (see
    ``RunDirCallback.smooth_loss``)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    learn.model.load_state_dict(state["model"])
    if state["opt"] is not None:
        if learn.opt is None:
            learn.create_opt()
        learn.opt.load_state_dict(state["opt"])
    set_rng_state(learn, state["rng"])
    return int(state["epoch"]), state.get("smooth_loss")


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
