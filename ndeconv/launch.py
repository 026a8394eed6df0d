"""``ndeconv train --num-processes N``: run the same training under ``accelerate launch``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .io import write_yaml
from .recipe import Recipe, recipe_to_dict

__all__ = ["accelerate_command", "launch_train"]


def accelerate_command(num_processes: int) -> list[str]:
    """``accelerate launch --multi_gpu`` for N data-parallel processes on this machine.

    Accelerate picks NCCL when GPUs are present and gloo on a CPU-only machine.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes",
           str(num_processes), "--dynamo_backend", "no", "--mixed_precision", "no", "--multi_gpu"]
    return cmd


def launch_train(num_processes: int, run_dir: Path, recipe: Recipe | None, *, sync_stats: bool = True,
                 quiet: bool = False) -> tuple[int, dict | None]:
    """Train ``recipe`` into ``run_dir`` (or resume ``run_dir`` when ``recipe`` is None) on N processes.

    The resolved recipe travels to the workers as a file, so every override applies on every
    rank. Returns the launcher's exit status and, on success, the run's results.
    """
    with tempfile.TemporaryDirectory(prefix="ndeconv-launch-") as tmp:
        args = ["--resume", str(run_dir)]
        if recipe is not None:
            recipe_file = write_yaml(Path(tmp) / f"{recipe.name}.yaml", recipe_to_dict(recipe))
            args = [str(recipe_file), "--out", str(run_dir)]
        args += ["--sync-stats" if sync_stats else "--no-sync-stats"] + (["--quiet"] if quiet else [])
        code = subprocess.call(accelerate_command(num_processes) + ["-m", "ndeconv", "train", *args])
    results_file = Path(run_dir) / "results.json"
    return code, (json.loads(results_file.read_text()) if code == 0 and results_file.is_file() else None)
