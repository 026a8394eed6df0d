"""One run per directory: an exclusive lock on ``RUN_DIR/.lock`` while a run writes there.

The lock is an OS file lock (``flock``): a second run into the same directory, even one started
at the same instant, is refused in one line; a process that is killed releases it, so a resume
is never blocked by a dead run. The lock file is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import RunDirError
from ..rundir import LOCK

__all__ = ["run_lock"]


@contextlib.contextmanager
def run_lock(run_dir: Path, fresh: bool) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the body (creating the directory). ``fresh``: the run starts the
    directory, so it must hold nothing else once the lock is held (a run that got there first,
    finished and let go is not overwritten)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{run_dir}: another ndeconv run is writing into it (it holds the lock); wait for it "
                          "to finish or choose another output directory") from None
    try:
        if fresh and any(p.name != LOCK for p in run_dir.iterdir()):
            raise RunDirError(f"{run_dir}: already exists and is not empty (another run wrote it first)")
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
