"""fastai callbacks that ndeconv's Learners use: Accelerate (devices, processes, mixed precision),
the run directory (metrics, checkpoints) and rich progress output."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from fastai.callback.core import Callback, CancelStepException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..outputs import write_text
from ..rundir import CHECKPOINT, METRICS, rows_to_csv
from .checkpoint import save_checkpoint

__all__ = ["AcceleratorCallback", "DivergenceCallback", "NonFinite", "RunDirCallback", "RichProgressCallback",
           "DataEpochCallback"]


class AcceleratorCallback(Callback):
    """Drive the Learner through a Hugging Face ``Accelerator``.

    Puts the model on the accelerator's device; with several processes it wraps the model in
    DistributedDataParallel and gives each process its shard of the training epoch (every
    process validates on the whole validation set, so all report the same metrics). Each
    forward and loss runs under ``accelerator.autocast()`` (so ``bf16`` is active on CPU too;
    ``fp16`` on CPU uses ``torch.autocast("cpu", dtype=torch.float16)``). With ``fp16`` the loss
    is scaled by a ``GradScaler`` and steps with overflowing gradients are skipped.
    """

    order = 11

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self._autocast = None

    @property
    def distributed(self) -> bool:
        return self.accelerator.num_processes > 1

    def before_fit(self) -> None:
        device = self.accelerator.device
        self.learn.model.to(device)
        self.learn.dls.device = device
        for dl in self.learn.dls.loaders:
            dl.to(device)
        if self.distributed:
            self.learn.model = self.accelerator.prepare_model(self.learn.model)
            self.dls.train.shard(self.accelerator.process_index, self.accelerator.num_processes)
        enabled = self.accelerator.mixed_precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled) if enabled else None

    def _autocast_context(self):
        """Accelerate's autocast; on CPU it knows only bf16, so fp16 uses ``torch.autocast`` directly."""
        if self.accelerator.mixed_precision == "fp16" and self.accelerator.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.float16)
        return self.accelerator.autocast()

    def before_batch(self) -> None:
        self._autocast = self._autocast_context()
        self._autocast.__enter__()

    def _exit_autocast(self) -> None:
        if self._autocast is not None:
            self._autocast.__exit__(None, None, None)
            self._autocast = None

    def after_pred(self) -> None:
        self.learn.pred = self.pred.float()

    def after_loss(self) -> None:
        self._exit_autocast()

    def after_cancel_batch(self) -> None:
        self._exit_autocast()

    def before_backward(self) -> None:
        if self.scaler is not None:
            self.learn.loss_grad = self.scaler.scale(self.loss_grad)

    def before_step(self) -> None:
        if self.scaler is None:
            return
        self._skipped = True
        self.scaler.step(self)  # unscales; calls self.step() only when the gradients are finite
        if self._skipped:
            raise CancelStepException()

    def after_step(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    @property
    def param_groups(self) -> list[dict]:
        """``GradScaler`` unscales these: the fastai optimizer's parameter groups."""
        return self.opt.param_groups

    def step(self, *args, **kwargs) -> None:
        """Called by ``GradScaler.step`` for finite gradients: let fastai take the optimizer step."""
        self._skipped = False

    def after_fit(self) -> None:
        self._exit_autocast()
        if self.distributed:
            self.learn.model = self.accelerator.unwrap_model(self.learn.model)
            self.dls.train.shard(0, 1)


class DataEpochCallback(Callback):
    """Tell the training loader which epoch it serves (its alternating flip depends on it; a resumed
    run serves the same images as an uninterrupted one)."""

    def before_train(self) -> None:
        self.dls.train.epoch = self.epoch


class NonFinite(Exception):
    """Raised by :class:`DivergenceCallback`: where training stopped and what was not finite."""

    def __init__(self, what: str, epoch: int, step: int, lr: float):
        super().__init__(f"{what} not finite")  # fastai prefixes this text; the fields stay as they are
        self.what, self.epoch, self.step, self.lr = f"{what} not finite", epoch, step, lr


class DivergenceCallback(Callback):
    """Stop training at the first non-finite training loss, or non-finite weights after a step.

    Raises :class:`NonFinite` with the epoch, the step within it and the learning rate; with
    several processes all ranks agree (a flag is all-reduced), so they stop together.
    """

    order = 12  # right after the AcceleratorCallback has unscaled, before anything records the value

    def _check(self, finite: bool, what: str) -> None:
        flag = torch.tensor([0.0 if finite else 1.0])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            raise NonFinite(what, self.epoch + 1, self.iter + 1, float(self.opt.hypers[-1]["lr"]))

    def after_loss(self) -> None:
        if self.training:
            self._check(bool(torch.isfinite(self.loss.detach()).all()), "the training loss is")

    def after_step(self) -> None:
        # One float64 sum per tensor: exact (finite float32 values cannot overflow it, and any NaN
        # or infinity makes it non-finite) and one pass without the temporaries of isfinite, which
        # cost nearly as much as a whole BN step at batch 2.
        sums = [p.detach().sum(dtype=torch.float64) for p in self.learn.model.parameters()]
        finite = bool(torch.isfinite(torch.stack(sums)).all()) if sums else True
        self._check(finite, "the weights after the step are")


def epoch_stats(recorder) -> dict[str, float]:
    """The Recorder's values for the epoch just finished, by name (train_loss, valid_loss, metrics)."""
    names = recorder.metric_names[1:-1] if recorder.add_time else recorder.metric_names[1:]
    return {n: float(v) for n, v in zip(names, recorder.values[-1])}


class RunDirCallback(Callback):
    """Write ``metrics.csv`` (a row per epoch: losses, metrics, the epoch's ``seconds`` and the
    ``train_seconds`` of its training part, validation left out) and ``checkpoint.pth`` after
    every epoch, atomically.

    Only the main process writes. Epochs skipped on resume are not logged again: the rows of
    the earlier run are kept and the new ones appended. ``smooth_loss`` (``(val, count)`` from
    the checkpoint) continues the smoothed training loss of a resumed run where it stopped.
    """

    order = 70  # after the Recorder has the epoch's values (and has reset its smoother in before_fit)

    def __init__(self, run_dir: Path, is_main: bool = True, rows: list[dict] | None = None):
        self.run_dir, self.is_main = Path(run_dir), is_main
        self.rows = list(rows or [])
        self.smooth_loss: tuple | None = None
        self._trained = False

    def before_fit(self) -> None:
        if self.smooth_loss is not None:
            self.recorder.smooth_loss.val, self.recorder.smooth_loss.count = self.smooth_loss

    def before_epoch(self) -> None:
        self._start = time.perf_counter()

    def before_train(self) -> None:
        self._trained = True
        self._train_start = time.perf_counter()

    def after_train(self) -> None:
        if self._trained:
            self._train_seconds = time.perf_counter() - self._train_start

    def after_epoch(self) -> None:
        # epochs skipped on resume end here without before_epoch/before_train having run
        trained, self._trained = self._trained, False
        if not trained:
            return
        row = {"epoch": self.epoch + 1, **epoch_stats(self.recorder)}
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        row["train_seconds"] = round(self._train_seconds, 3)
        self.rows.append(row)
        if self.is_main:  # checkpoint first: a metrics row always has its checkpoint, even after a kill
            save_checkpoint(self.learn, self.run_dir / CHECKPOINT, self.epoch + 1)
            write_text(self.run_dir / METRICS, rows_to_csv(self.rows))


class RichProgressCallback(Callback):
    """Progress bars for the fit and the current epoch, and a line per finished epoch (main process only)."""

    order = 75

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console, self.enabled = console or Console(stderr=True), enabled
        self._trained = False

    def before_fit(self) -> None:
        if not self.enabled:
            return
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.fit_task = self.progress.add_task("epochs", total=self.n_epoch)
        self.batch_task = None

    def before_epoch(self) -> None:
        if self.enabled:
            self.progress.update(self.fit_task, completed=self.epoch)

    def before_train(self) -> None:
        self._trained = True
        self._new_task(f"epoch {self.epoch + 1} train", len(self.dl))

    def before_validate(self) -> None:
        self._new_task(f"epoch {self.epoch + 1} valid", len(self.dl))

    def _new_task(self, name: str, total: int) -> None:
        if not self.enabled:
            return
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(name, total=total)

    def after_batch(self) -> None:
        if self.enabled and self.batch_task is not None:
            self.progress.advance(self.batch_task)

    def after_epoch(self) -> None:
        # epochs skipped on resume end here without before_epoch/before_train having run
        trained, self._trained = self._trained, False
        if not self.enabled or not trained:
            return
        stats = "  ".join(f"{n} {v:.4f}" for n, v in epoch_stats(self.recorder).items())
        self.progress.update(self.fit_task, completed=self.epoch + 1)
        self.console.print(f"epoch {self.epoch + 1}/{self.n_epoch}  {stats}")

    def after_fit(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (also on Ctrl-C, which skips ``after_fit``)."""
        if self.enabled and getattr(self, "progress", None) is not None:
            self.progress.stop()
            self.progress = None
