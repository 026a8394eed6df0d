"""Atomic file writes: write to a temporary file in the same directory, then rename over the target."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the result onto ``path`` in one rename.

    Readers see the old file or the complete new one, never a partial write; on error the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            raise _write_error(path, e) from None
        raise
    return path


def _write_error(path: Path, error: BaseException):
    """An :class:`~ndeconv.errors.OutputError` naming ``path`` and why the write failed: the OS
    error, or (for writers that hide it) a full disk or a file-size limit found on inspection."""
    import errno
    import resource
    import shutil

    from .errors import OutputError, first_line

    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror
        if error.errno == errno.EFBIG:
            reason += " (the file-size limit, ulimit -f)"
    else:
        reason = first_line(error, 160)
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < 64 * 2**20:
            reason = f"no space left on the device ({free // 2**20} MB free): {reason}"
        elif soft != resource.RLIM_INFINITY:
            reason = f"the file-size limit ({soft} bytes, ulimit -f): {reason}"
    return OutputError(f"{path}: could not write it ({reason}); the file it would replace is unchanged")


def check_writable(path: str | os.PathLike, directory: bool = False) -> Path:
    """Refuse, before any work, an output ``path`` that cannot be written: a file where a directory
    is wanted (or the reverse), or a place without write permission. Nothing is left behind."""
    from .errors import OutputError

    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory")
    if not directory and path.is_dir():
        raise OutputError(f"{path}: is a directory, not a file")
    parent = path if directory else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is not a directory")
    try:
        tempfile.NamedTemporaryFile(dir=parent, prefix=".ndeconv-check-").close()
    except OSError as e:
        raise OutputError(f"{path}: cannot write in {parent} ({e.strerror or e})") from None
    return path



def pyplot():
    """matplotlib's ``pyplot`` on the Agg backend: figures are drawn for files, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110, tight: bool = True, crop: bool = False) -> Path:
    """Write a matplotlib figure to ``path`` as a PNG, atomically, and close it: laid out first
    (``tight``), trimmed to what it draws (``crop``)."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    extra = {"bbox_inches": "tight"} if crop else {}
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, **extra))
    plt.close(fig)
    return written

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, infinity) as ``None``: what strict JSON can hold."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, strict JSON (a NaN or infinity becomes ``null``)."""
    return write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as YAML, keys in insertion order."""
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))
