"""The processes of a run: how many it was launched on, whether the environment agrees, and what a
lost peer looks like.

A run records its launch (``launch.json``: process count, synchronised statistics) when it starts,
so a resume continues on the same processes as the run it continues (a different count would draw
other batches and give other numbers). A process that sees itself alone while the environment
prepares a multi-process or multi-machine launch would train a second, independent run into the
same directory: it is refused. A collective that fails because another process died becomes a
:class:`LaunchError` that says so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import LaunchError, RunDirError, first_line
from ..outputs import write_json
from ..rundir import LAUNCH

__all__ = ["record_launch", "read_launch", "check_launch_environment", "lost_peer", "naming_lost_peers"]


def record_launch(run_dir: Path, num_processes: int, sync_stats: bool) -> None:
    """Write ``run_dir/launch.json``: the process count and statistics synchronisation of the run."""
    write_json(run_dir / LAUNCH, {"num_processes": num_processes, "sync_stats": sync_stats})


def read_launch(run_dir: Path) -> dict | None:
    """``run_dir``'s recorded launch (``num_processes``, ``sync_stats``), or None for a run stopped
    before it recorded one."""
    path = Path(run_dir) / LAUNCH
    if not path.is_file():
        return None
    try:
        launch = json.loads(path.read_text())
        count, sync = launch["num_processes"], launch["sync_stats"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise RunDirError(f"{path}: damaged ({first_line(e, 200)})") from None
    if not (isinstance(count, int) and count >= 1 and isinstance(sync, bool)):
        raise RunDirError(f"{path}: damaged (num_processes {count!r}, sync_stats {sync!r})")
    return {"num_processes": count, "sync_stats": sync}


def _count(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def check_launch_environment(num_processes: int) -> None:
    """Refuse a process that runs alone (``num_processes`` 1) where the environment prepares several:
    a rendezvous address without a world size (``accelerate launch --num_machines 2`` without
    ``--multi_gpu``), a world size above one that the process group does not have, or a SLURM
    allocation of several nodes."""
    if num_processes > 1:
        return
    world, nodes = _count("WORLD_SIZE"), _count("SLURM_NNODES") or _count("SLURM_JOB_NUM_NODES")
    if world is not None and world > 1:
        why = f"WORLD_SIZE is {world}"
    elif nodes is not None and nodes > 1:
        why = f"the SLURM job has {nodes} nodes"
    elif os.environ.get("MASTER_ADDR") and world is None:
        why = f"MASTER_ADDR is set ({os.environ['MASTER_ADDR'][:100]}) without a WORLD_SIZE"
    else:
        return
    raise LaunchError(f"this process trains alone although {why}: several machines would each train their own "
                      "run into one directory; launch every machine's processes into one process group "
                      "(accelerate launch --multi_gpu --num_machines N --machine_rank R ...), or unset those "
                      "variables to train on one process")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective of a multi-process run failing because another process (or
    its machine) went away: a ``torch.distributed`` error raised while a process group is up."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if isinstance(error, torch.distributed.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("connection reset", "connection closed", "broken pipe", "gloo", "nccl"))


@contextlib.contextmanager
def naming_lost_peers(run_dir: Path) -> Iterator[None]:
    """Turn a collective that fails because another process went away into a :class:`LaunchError`
    naming this process (``lost_peer``); every other error passes unchanged."""
    try:
        yield
    except Exception as e:
        if not lost_peer(e):
            raise
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        raise LaunchError(f"{run_dir}: process {rank} of {world} lost contact with another process, which died or "
                          f"whose machine went away ({first_line(e, 200)})", world_size=world,
                          lost_peer=True) from None
