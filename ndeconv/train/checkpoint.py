"""The checkpoint a run writes after every epoch (model, optimizer, RNG states) and reads to resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..outputs import atomic_write

__all__ = ["rng_state", "set_rng_state", "save_checkpoint", "read_checkpoint", "load_checkpoint"]


def _numpy_state() -> tuple:
    """numpy's global random state with its key array as a tensor: plain data that
    ``torch.load(weights_only=True)`` reads without unpickling numpy objects."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _set_numpy_state(state: tuple) -> None:
    name, keys, pos, has_gauss, gauss = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _plain_groups(groups: list[dict]) -> list[dict]:
    """Optimizer hyper-parameters (fastai's ``hypers``, a torch optimizer's ``param_groups``) with numpy
    scalars, which fastai's schedules set, as Python numbers (exact)."""
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in group.items()} for group in groups]


def rng_state(learn) -> dict:
    """Every random state a resumed run needs to continue: torch, numpy, python, loaders, augmentation."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": random.getstate(),
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
    _set_numpy_state(state["numpy"])
    random.setstate(state["python"])
    learn.dls.train.rng.setstate(state["train_dl"])
    tfm = getattr(learn.dls.train, "after_batch", None)
    if "augment" in state and hasattr(tfm, "generator"):
        tfm.generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(learn, path: Path, epochs_done: int) -> None:
    """Model, optimizer, completed epochs, RNG state, the smoothed training loss and the state of the
    callbacks that keep one (``checkpoint_state()``: the weight average) in one atomically written file."""
    model = learn.model.module if hasattr(learn.model, "module") else learn.model
    smooth = learn.recorder.smooth_loss
    opt = None
    if learn.opt:
        opt = learn.opt.state_dict()
        key = "hypers" if "hypers" in opt else "param_groups"  # fastai's optimizers, or a wrapped torch one
        opt = {**opt, key: _plain_groups(opt[key])}
    callbacks = {cb.name: cb.checkpoint_state() for cb in learn.cbs if hasattr(cb, "checkpoint_state")}
    val = smooth.val.as_subclass(torch.Tensor) if isinstance(smooth.val, torch.Tensor) else smooth.val  # fastai's
    # losses (label smoothing) return its TensorBase, which a plain-data checkpoint cannot hold
    state = {"model": model.state_dict(), "opt": opt, "epoch": epochs_done, "rng": rng_state(learn),
             "smooth_loss": (val, int(smooth.count)), "callbacks": callbacks}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: Path) -> dict:
    """A :func:`save_checkpoint` file's contents, read as plain data only (``weights_only``): a file
    holding anything else (a planted pickle, a checkpoint of another program) is refused before any
    of it runs, and a damaged file is a :class:`RunDirError` naming it."""
    import pickle
    import warnings

    from ..errors import RunDirError, first_line

    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before it refuses the file
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunDirError(f"{path}: holds objects other than tensors and numbers; not a checkpoint ndeconv wrote, "
                          "refusing to load it") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = first_line(e, 200)
        raise RunDirError(f"{path}: unreadable checkpoint, truncated or damaged ({reason})") from None


def load_checkpoint(learn, path: Path) -> tuple[int, tuple | None]:
    """Restore a :func:`save_checkpoint` file into ``learn``; returns the completed epochs and the
    smoothed loss's state ``(val, count)``, which the Recorder resets when a fit starts (see
    ``RunDirCallback.smooth_loss``)."""
    state = read_checkpoint(path)
    learn.model.load_state_dict(state["model"])
    if state["opt"] is not None:
        if learn.opt is None:
            learn.create_opt()
        learn.opt.load_state_dict(state["opt"])
    set_rng_state(learn, state["rng"])
    for cb in learn.cbs:
        if cb.name in state.get("callbacks", {}):
            cb.load_checkpoint_state(state["callbacks"][cb.name])
    return int(state["epoch"]), state.get("smooth_loss")
