"""Atomic file writes: write to a temporary file in the same directory, then rename over the target."""

from __future__ import annotations

import json
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as YAML, keys in insertion order."""
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))
