"""What a finished run leaves that must not depend on how it got there (interrupted, resumed,
calibrated), and a bit-for-bit comparison of it."""

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ndeconv.rundir import read_metrics


def run_state(run_dir: Path) -> dict:
    """Everything a finished run leaves that must not depend on an interruption: weights and
    running estimates, the optimizer state of the last checkpoint, and the metrics (seconds aside)."""
    ckpt = torch.load(run_dir / "checkpoint.pth", weights_only=False)
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")}
            for r in read_metrics(run_dir / "metrics.csv")]
    return {"weights": load_file(run_dir / "model.safetensors"), "model": ckpt["model"], "opt": ckpt["opt"],
            "rows": rows}


def assert_identical(a, b, where="") -> None:
    """Bit-for-bit equality of nested checkpoint structures."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def default_interrupt() -> None:
    """``preexec_fn`` for a child that the test interrupts: Ctrl-C at its default, so that the child
    installs its own handler even where the test runner was started with interrupts ignored (a
    background job of a script), which the child would otherwise inherit and keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until the metrics table at ``path`` has ``n`` rows, failing if ``proc`` ends first."""
    start = time.time()
    while time.time() - start < timeout:
        if path.exists() and len(read_metrics(path)) >= n:
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"the run never finished epoch {n}")


def rank_process(pid: int, rank: int, timeout: float = 120):
    """The training process of ``rank`` among the descendants of ``pid`` (found by its RANK variable)."""
    import psutil

    start = time.time()
    while time.time() - start < timeout:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "ndeconv" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank}")


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar the TensorBoard files under ``log_dir`` hold."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
