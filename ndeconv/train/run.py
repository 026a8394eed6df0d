"""One training run: recipe in, complete run directory out (and resumable if interrupted), its
files written in the order :mod:`ndeconv.rundir` describes."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import re
from datetime import datetime
from pathlib import Path

import torch
from fastai.torch_core import set_seed
from rich.console import Console
from safetensors.torch import save_model

from ..errors import DivergedError, NdeconvError, RecipeError, RunDirError
from ..outputs import atomic_write, check_writable, write_json, write_text, write_yaml
from ..recipe import Recipe, parse_budget, recipe_to_dict
from ..rundir import (CARD, CHECKPOINT, CONFIG, LOCK, METRICS, RESULTS, WEIGHTS, build_model, is_finished,
                      load_run_recipe, read_metrics, read_results)
from ..tasks import Task, resolve_task
from ..version import __version__
from .budget import calibrate
from .callbacks import NonFinite, RichProgressCallback, RunDirCallback
from .card import model_card
from .checkpoint import load_checkpoint
from .length import RunLength, run_length
from .learner import build_learner, fit_recipe, make_accelerator, process_state
from .lock import run_lock
from .processes import check_launch_environment, check_resume_processes, naming_lost_peers, record_launch
from .tracking import TrackerCallback, flat_config

__all__ = ["train", "resume", "default_run_dir"]

#: What fastai puts before an exception raised in a callback.
_FASTAI_PREFIX = re.compile(r"^Exception occured in `\w+` when calling event `\w+`:\s*")


def default_run_dir(recipe: Recipe, root: str | Path = "runs") -> Path:
    """``runs/<recipe>-<model>-<norm>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{recipe.name}-{recipe.model.name}-{recipe.model.norm}-{stamp}"


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _results(recipe: Recipe, task: Task, rows: list[dict], learn, dls, accelerator, sync_stats: bool,
             length: RunLength) -> dict:
    """What ``results.json`` holds: the last epoch's metrics, the run's length and time, the setup."""
    score = task.metric
    last = rows[-1] if rows else {}
    metrics = {k: v for k, v in last.items()
               if k not in ("epoch", "train_loss", "valid_loss", "seconds", "train_seconds")}
    return {
        "recipe": recipe.name, "model": recipe.model.name, "norm": recipe.model.norm, "task": recipe.task,
        "status": "finished", "score": score, "epochs": len(rows), score: None, **metrics,
        "valid_loss": last.get("valid_loss"), "train_loss": last.get("train_loss"),
        f"best_{score}": max((r[score] for r in rows), default=None),
        "seconds": round(sum(r["seconds"] for r in rows), 3),
        "train_seconds": round(sum(r["train_seconds"] for r in rows), 3),
        "budget": recipe.train.budget, "steps": length.steps,
        "step_seconds": recipe.train.step_seconds,
        "params": _num_params(learn.model),
        "train_images": len(dls.train.dataset) if hasattr(dls.train, "dataset") else None,
        "classes": getattr(dls, "class_names", None),
        "world_size": accelerator.num_processes, "precision": recipe.train.precision,
        "sync_stats": bool(sync_stats and accelerator.num_processes > 1), "device": str(accelerator.device),
        "ndeconv": __version__, "torch": torch.__version__, "python": platform.python_version(),
    }


def _calibration_batches(dls, recipe: Recipe) -> list[torch.Tensor] | None:
    """The batches a conversion with ``model.calibrate`` images is calibrated on (None: no calibration)."""
    if not (recipe.model.norm == "deconv" and recipe.model.calibrate):
        return None
    from ..data.loaders import normalised_training_images

    images = normalised_training_images(dls, recipe.model.calibrate, recipe.train.seed)
    return list(images.split(recipe.train.batch_size))


def _run(recipe: Recipe, run_dir: Path, resuming: bool, console: Console | None, progress: bool,
         sync_stats: bool, cbs: list | None, fresh: bool) -> dict:
    """Train ``recipe`` into ``run_dir`` (``resuming``: from its checkpoint) under the directory's
    lock (:func:`run_lock`; a ``fresh`` run takes it only once the input has been checked and
    built, so bad input leaves nothing behind)."""
    with contextlib.ExitStack() as held:
        held.enter_context(naming_lost_peers(run_dir))
        set_seed(recipe.train.seed)
        accelerator = make_accelerator(recipe.train.precision, log_with=recipe.train.log_with,
                                       project_dir=str(run_dir))
        check_launch_environment(accelerator.num_processes)
        is_main = accelerator.is_main_process
        if is_main and not fresh:  # a resume: the directory is ours before anything in it is read
            held.enter_context(run_lock(run_dir, fresh=False))
        if not fresh:
            check_resume_processes(run_dir, accelerator.num_processes)
        task = resolve_task(recipe)  # once: handed to everything below
        dls = task.dataloaders(recipe)
        model = build_model(recipe, task, pretrained=not resuming, calibration=None if resuming else
                            _calibration_batches(dls, recipe))
        if sync_stats and accelerator.num_processes > 1:
            from ..distributed import sync_deconv_stats

            sync_deconv_stats(model)
        steps_per_epoch = dls.train.batches_per_process(accelerator.num_processes)
        if not resuming and recipe.train.budget is not None and recipe.train.steps is None:
            steps, step_seconds = calibrate(build_learner(recipe, dls, model, accelerator, task),
                                            parse_budget(recipe.train.budget))
            recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=steps,
                                                                           step_seconds=step_seconds))
        length = run_length(recipe.train, steps_per_epoch)
        rows = read_metrics(run_dir / METRICS) if resuming and (run_dir / METRICS).exists() else []
        run_cb = RunDirCallback(run_dir, is_main=is_main, rows=rows)
        progress_cb = RichProgressCallback(console, enabled=progress and is_main)
        tracking = [TrackerCallback(accelerator, flat_config(recipe))] if recipe.train.log_with else []
        learn = build_learner(recipe, dls, model, accelerator, task, length,
                              cbs=[run_cb, progress_cb, *tracking, *(cbs or [])])
        start_epoch = 0
        if resuming:
            start_epoch, run_cb.smooth_loss = load_checkpoint(learn, run_dir / CHECKPOINT)
            run_cb.rows = [r for r in run_cb.rows if r["epoch"] <= start_epoch]
        elif is_main:  # the calibrated steps are part of the recipe: a resume takes exactly these
            if fresh:
                held.enter_context(run_lock(run_dir, fresh=True))
            write_yaml(run_dir / CONFIG, recipe_to_dict(recipe))
            record_launch(run_dir, accelerator.num_processes, sync_stats)
        accelerator.wait_for_everyone()
        try:
            fit_recipe(learn, recipe, length, start_epoch)
        except NdeconvError as e:  # fastai prefixes a callback's exception with its own words: keep ndeconv's
            e.args = (_FASTAI_PREFIX.sub("", str(e)),)
            raise
        except KeyboardInterrupt:  # the checkpoint of the last finished epoch stays: resume continues from there
            progress_cb.close()
            raise
        except NonFinite as e:  # a result, not a crash: recorded, and the last finite checkpoint stays
            progress_cb.close()
            results = {**_results(recipe, task, run_cb.rows, learn, dls, accelerator, sync_stats, length), "status": "diverged",
                       task.metric: None,
                       "diverged": {"epoch": e.epoch, "step": e.step, "lr": e.lr, "what": e.what}}
            if is_main:
                write_json(run_dir / RESULTS, results)
            accelerator.wait_for_everyone()
            kept = f"the checkpoint of epoch {run_cb.rows[-1]['epoch']} is the last finite one" if run_cb.rows \
                else "no epoch had finished"
            raise DivergedError(f"{run_dir}: training diverged at epoch {e.epoch}, step {e.step} (learning rate "
                                f"{e.lr:g}): {e.what}; {kept}", results) from None
        accelerator.wait_for_everyone()
        results = _results(recipe, task, run_cb.rows, learn, dls, accelerator, sync_stats, length)
        if is_main:
            atomic_write(run_dir / WEIGHTS, lambda tmp: save_model(learn.model, tmp))
            write_text(run_dir / CARD, model_card(recipe, results, run_cb.rows, task))
            write_json(run_dir / RESULTS, results)
        accelerator.wait_for_everyone()
        return results


def train(recipe: Recipe, out: str | Path | None = None, *, console: Console | None = None, progress: bool = True,
          sync_stats: bool = True, cbs: list | None = None) -> tuple[Path, dict]:
    """Train ``recipe`` into a new run directory (``out`` or :func:`default_run_dir`); returns it and the results.

    ``sync_stats`` all-reduces deconvolution statistics in multi-process runs; ``cbs`` are extra
    fastai callbacks for the Learner.

    Everything that can be wrong with the input (data source, columns, model name, precision) is
    checked before the directory is created.
    """
    run_dir = check_writable(Path(out) if out is not None else default_run_dir(recipe), directory=True)
    if process_state().is_main_process and run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise RunDirError(f"{run_dir}: already exists and is not empty (resume it to continue it, or choose another "
                          "output directory)")
    return run_dir, _run(recipe, run_dir, False, console, progress, sync_stats, cbs, fresh=True)


def resume(run_dir: str | Path, *, console: Console | None = None, progress: bool = True,
           sync_stats: bool = True, cbs: list | None = None) -> tuple[Path, dict]:
    """Continue an interrupted run from the checkpoint of its last finished epoch (from the start if
    it stopped during its first epoch); a finished run returns its results unchanged, a diverged
    one raises :class:`DivergedError` again."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    if is_finished(run_dir):
        results = read_results(run_dir)
        if results.get("status") == "diverged":
            at = results.get("diverged", {})
            raise DivergedError(f"{run_dir}: this run diverged (epoch {at.get('epoch')}, step {at.get('step')}); "
                                "train a new run, e.g. with a lower optim.lr", results)
        return run_dir, results
    if recipe.data.path is not None and not Path(recipe.data.path).exists():
        raise RecipeError(f"{run_dir / CONFIG}: data.path {recipe.data.path} no longer exists")
    resuming = (run_dir / CHECKPOINT).is_file()
    return run_dir, _run(recipe, run_dir, resuming, console, progress, sync_stats, cbs, fresh=False)
