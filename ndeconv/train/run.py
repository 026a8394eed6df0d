"""One training run: a :class:`~ndeconv.train.plan.RunPlan` in, a complete run directory out (and
resumable if interrupted), its files written in the order :mod:`ndeconv.rundir` describes."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import re
from pathlib import Path

import torch
from accelerate import Accelerator
from fastai.learner import Learner
from fastai.torch_core import set_seed
from rich.console import Console
from safetensors.torch import save_model

from ..errors import DivergedError, LaunchError, NdeconvError
from ..outputs import atomic_write, write_json, write_text, write_yaml
from ..recipe import Recipe, parse_budget, recipe_to_dict
from ..rundir import CARD, CHECKPOINT, CONFIG, METRICS, RESULTS, WEIGHTS, build_model, read_metrics, read_results
from ..version import __version__
from .budget import calibrate
from .callbacks import NonFinite, RichProgressCallback, RunDirCallback
from .card import model_card
from .checkpoint import load_checkpoint
from .learner import build_learner, fit_recipe, make_accelerator
from .length import RunLength, run_length
from .lock import run_lock
from .plan import RunPlan, default_run_dir, first_rank, launch_processes, plan_resume, plan_train
from .processes import check_launch_environment, naming_lost_peers, record_launch
from .tracking import TrackerCallback, flat_config

__all__ = ["train", "resume", "execute", "default_run_dir"]

#: What fastai puts before an exception raised in a callback.
_FASTAI_PREFIX = re.compile(r"^Exception occured in `\w+` when calling event `\w+`:\s*")


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _results(plan: RunPlan, rows: list[dict], learn: Learner, dls, accelerator: Accelerator,
             length: RunLength) -> dict:
    """What ``results.json`` holds: the last epoch's metrics, the run's length and time, the setup."""
    recipe, score = plan.recipe, plan.task.metric
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
        "sync_stats": bool(plan.sync_stats and accelerator.num_processes > 1), "device": str(accelerator.device),
        "ndeconv": __version__, "torch": torch.__version__, "python": platform.python_version(),
    }


def _calibration_batches(dls, recipe: Recipe) -> list[torch.Tensor] | None:
    """The batches a conversion with ``model.calibrate`` images is calibrated on (None: no calibration)."""
    if not (recipe.model.norm == "deconv" and recipe.model.calibrate):
        return None
    from ..data.loaders import normalised_training_images

    images = normalised_training_images(dls, recipe.model.calibrate, recipe.train.seed)
    return list(images.split(recipe.train.batch_size))


def _accelerator(plan: RunPlan, held: contextlib.ExitStack) -> Accelerator:
    """The run's Accelerator, its processes checked against the plan; a resume takes the directory's
    lock before anything in it is read (a new run takes it once its input has been built)."""
    set_seed(plan.recipe.train.seed)
    accelerator = make_accelerator(plan.recipe.train.precision, log_with=plan.recipe.train.log_with,
                                   project_dir=str(plan.run_dir))
    check_launch_environment(accelerator.num_processes)
    if plan.start != "new":
        if accelerator.is_main_process:
            held.enter_context(run_lock(plan.run_dir, fresh=False))
        if accelerator.num_processes != plan.num_processes:
            raise LaunchError(f"{plan.run_dir}: trained on {plan.num_processes} process(es), resumed on "
                              f"{accelerator.num_processes}; a resume continues on the run's own processes (other "
                              "batches would give other numbers)", recorded=plan.num_processes)
    return accelerator


def _planned_length(plan: RunPlan, dls, model, accelerator: Accelerator) -> tuple[RunPlan, RunLength]:
    """The run's length; a new budgeted run first times its steps on a bare learner and records the
    steps that fit (the plan's recipe then holds them, so a resume takes exactly those)."""
    train = plan.recipe.train
    if plan.start == "new" and train.budget is not None and train.steps is None:
        steps, step_seconds = calibrate(build_learner(plan.recipe, dls, model, accelerator, plan.task),
                                        parse_budget(train.budget))
        recipe = dataclasses.replace(plan.recipe, train=dataclasses.replace(train, steps=steps,
                                                                            step_seconds=step_seconds))
        plan = dataclasses.replace(plan, recipe=recipe)
    return plan, run_length(plan.recipe.train, dls.train.batches_per_process(accelerator.num_processes))


def _start(plan: RunPlan, learn: Learner, run_cb: RunDirCallback, accelerator: Accelerator,
           held: contextlib.ExitStack) -> int:
    """The epoch training starts from: a checkpoint's, or 0 for a run from the start, which records its
    resolved recipe and launch first (a new run takes the directory before)."""
    if plan.start == "checkpoint":
        start_epoch, run_cb.smooth_loss = load_checkpoint(learn, plan.run_dir / CHECKPOINT)
        run_cb.rows = [r for r in run_cb.rows if r["epoch"] <= start_epoch]
        return start_epoch
    if accelerator.is_main_process:
        if plan.start == "new":
            held.enter_context(run_lock(plan.run_dir, fresh=True))
        write_yaml(plan.run_dir / CONFIG, recipe_to_dict(plan.recipe))
        record_launch(plan.run_dir, accelerator.num_processes, plan.sync_stats)
    return 0


def _diverged(plan: RunPlan, error: NonFinite, results: dict, rows: list[dict], is_main: bool) -> DivergedError:
    """A run that met a non-finite loss or weight: a result, recorded, with the last finite checkpoint kept."""
    results = {**results, "status": "diverged", plan.task.metric: None,
               "diverged": {"epoch": error.epoch, "step": error.step, "lr": error.lr, "what": error.what}}
    if is_main:
        write_json(plan.run_dir / RESULTS, results)
    kept = f"the checkpoint of epoch {rows[-1]['epoch']} is the last finite one" if rows else "no epoch had finished"
    return DivergedError(f"{plan.run_dir}: training diverged at epoch {error.epoch}, step {error.step} (learning "
                         f"rate {error.lr:g}): {error.what}; {kept}", results)


def execute(plan: RunPlan, *, console: Console | None = None, progress: bool = True, cbs: list | None = None) -> dict:
    """Train the run ``plan`` describes and return its results (a finished run's as they stand).
    ``cbs`` are extra fastai callbacks for the Learner."""
    if plan.start == "finished":
        return read_results(plan.run_dir)
    with contextlib.ExitStack() as held:
        held.enter_context(naming_lost_peers(plan.run_dir))
        accelerator = _accelerator(plan, held)
        is_main = accelerator.is_main_process
        dls = plan.task.dataloaders(plan.recipe)
        model = build_model(plan.recipe, plan.task, pretrained=plan.start != "checkpoint", calibration=None
                            if plan.start == "checkpoint" else _calibration_batches(dls, plan.recipe))
        if plan.sync_stats and accelerator.num_processes > 1:
            from ..distributed import sync_deconv_stats

            sync_deconv_stats(model)
        plan, length = _planned_length(plan, dls, model, accelerator)
        rows = read_metrics(plan.run_dir / METRICS) if plan.start == "checkpoint" and \
            (plan.run_dir / METRICS).exists() else []
        run_cb = RunDirCallback(plan.run_dir, is_main=is_main, rows=rows)
        progress_cb = held.enter_context(contextlib.closing(RichProgressCallback(console,
                                                                                 enabled=progress and is_main)))
        tracking = [TrackerCallback(accelerator, flat_config(plan.recipe))] if plan.recipe.train.log_with else []
        learn = build_learner(plan.recipe, dls, model, accelerator, plan.task, length,
                              cbs=[run_cb, progress_cb, *tracking, *(cbs or [])])
        start_epoch = _start(plan, learn, run_cb, accelerator, held)
        accelerator.wait_for_everyone()
        try:
            fit_recipe(learn, plan.recipe, length, start_epoch)
        except NdeconvError as e:  # fastai prefixes a callback's exception with its own words: keep ndeconv's
            e.args = (_FASTAI_PREFIX.sub("", str(e)),)
            raise
        except NonFinite as e:
            error = _diverged(plan, e, _results(plan, run_cb.rows, learn, dls, accelerator, length), run_cb.rows,
                              is_main)
            accelerator.wait_for_everyone()
            raise error from None
        accelerator.wait_for_everyone()
        results = _results(plan, run_cb.rows, learn, dls, accelerator, length)
        if is_main:
            atomic_write(plan.run_dir / WEIGHTS, lambda tmp: save_model(learn.model, tmp))
            write_text(plan.run_dir / CARD, model_card(plan.recipe, results, run_cb.rows, plan.task))
            write_json(plan.run_dir / RESULTS, results)
        accelerator.wait_for_everyone()
        return results


def train(recipe: Recipe, out: str | Path | None = None, *, console: Console | None = None, progress: bool = True,
          sync_stats: bool = True, cbs: list | None = None) -> tuple[Path, dict]:
    """Train ``recipe`` into a new run directory (``out`` or :func:`default_run_dir`); returns it and the results.

    ``sync_stats`` all-reduces deconvolution statistics in multi-process runs; ``cbs`` are extra
    fastai callbacks for the Learner. Everything that can be wrong with the input (data source,
    columns, model name, precision) is checked before the directory is created.
    """
    plan = plan_train(recipe, out, num_processes=launch_processes(), sync_stats=sync_stats,
                      check_dir=first_rank())
    return plan.run_dir, execute(plan, console=console, progress=progress, cbs=cbs)


def resume(run_dir: str | Path, *, console: Console | None = None, progress: bool = True,
           sync_stats: bool | None = None, cbs: list | None = None) -> tuple[Path, dict]:
    """Continue an interrupted run from the checkpoint of its last finished epoch (from the start if
    it stopped during its first epoch) on its own processes and statistics synchronisation
    (``sync_stats`` None: the run's; another value is refused); a finished run returns its results
    unchanged, a diverged one raises :class:`DivergedError` again."""
    plan = plan_resume(run_dir, sync_stats=sync_stats)
    return plan.run_dir, execute(plan, console=console, progress=progress, cbs=cbs)
