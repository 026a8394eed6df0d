"""Several processes on this machine: run a training command under Accelerate's launcher.

:func:`main` is ``accelerate launch ARGS`` that, when a process fails, writes which processes failed
and how to a report file instead of printing the launcher's traceback; :func:`launch_train` turns
the report into one :class:`LaunchError` naming the process that died. The command line decides
what the processes run. The launcher process starts as ``python -m _ndeconv_entry``
(:func:`accelerate_command`), without the package's ``__init__`` (timm, the models).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import LaunchError
from .common import INPUT_ERROR, INTERRUPTED, LOST_PEER

__all__ = ["accelerate_command", "launch_train", "LAUNCHED_ENV"]

LAUNCHED_ENV = "NDECONV_LAUNCH_REPORT"  # set for the processes of ndeconv's launcher: where failures go


def accelerate_command(num_processes: int) -> list[str]:
    """``accelerate launch --multi_gpu`` for N data-parallel processes on this machine.

    Accelerate picks NCCL when GPUs are present and gloo on a CPU-only machine.
    """
    return [sys.executable, "-m", "_ndeconv_entry", "--num_machines", "1", "--num_processes",
            str(num_processes), "--dynamo_backend", "no", "--mixed_precision", "no", "--multi_gpu"]


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _failure(report: Path, num_processes: int) -> LaunchError | int:
    """The error to raise for a failed launch, from the launcher's report, or the exit status when
    every failed process said why itself: bad input, or an interruption (with no bad input)."""
    try:
        failures = {int(rank): int(code) for rank, code in json.loads(report.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return LaunchError(f"the launcher of {num_processes} processes failed without saying which process "
                           "(see the lines above)", world_size=num_processes)
    quiet = (INPUT_ERROR, INTERRUPTED, LOST_PEER, -signal.SIGTERM)  # said so themselves, or ended as another died
    died = sorted(rank for rank, code in failures.items() if code not in quiet)
    if not died:
        if INPUT_ERROR in failures.values():
            return INPUT_ERROR
        if INTERRUPTED in failures.values():
            return INTERRUPTED
        died = sorted(failures)
    rank = died[0]
    others = f" (and {len(died) - 1} more)" if len(died) > 1 else ""
    return LaunchError(f"process {rank} of {num_processes} {_how(failures[rank])}{others}; the other processes "
                       "stopped", rank=rank, world_size=num_processes)


def launch_train(num_processes: int, train_args: list[str]) -> int:
    """Run ``ndeconv train`` with ``train_args`` on N processes through Accelerate's launcher and
    return its exit status; a process that died is a :class:`LaunchError` naming it (a process
    that printed its own error line leaves the status to say so)."""
    with tempfile.TemporaryDirectory(prefix="ndeconv-launch-") as tmp:
        report = Path(tmp) / "failures.json"
        env = {**os.environ, LAUNCHED_ENV: str(report)}
        code = subprocess.call(accelerate_command(num_processes) + ["-m", "ndeconv", "train", *train_args], env=env)
        if code != 0:
            error = _failure(report, num_processes)
            if isinstance(error, LaunchError):
                raise error
            return error  # the processes printed their own lines
    return code


def _quiet_elastic_logs() -> None:
    """The launcher's own log lines on a failure (which process, which signal) become the report."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """``accelerate launch`` with ``argv``; a failed process is written to the report file named by
    :data:`LAUNCHED_ENV` (rank -> exit status) instead of a traceback, and the exit status is 1."""
    import torch.distributed.run  # noqa: F401  (its loggers exist before they are quietened)
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv)
    report = os.environ.get(LAUNCHED_ENV)
    if report is None:
        launch_command(args)
        return 0
    _quiet_elastic_logs()
    try:
        launch_command(args)
    except ChildFailedError as e:
        failures = {rank: failure.exitcode for rank, failure in e.failures.items()}
    except subprocess.CalledProcessError as e:  # Accelerate's single-process launcher
        failures = {0: e.returncode}
    except (KeyboardInterrupt, SignalException):  # Ctrl-C: the processes said "interrupted" themselves
        return INTERRUPTED
    else:
        return 0
    Path(report).write_text(json.dumps(failures))
    return 1
