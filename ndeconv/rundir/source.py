"""Where a finished run comes from: a local run directory, or a Hugging Face hub repository that
``ndeconv push`` uploaded (``hf-hub:REPO_ID``), fetched into the hub's cache."""

from __future__ import annotations

from pathlib import Path

from ..errors import HubError, RunDirError, first_line

__all__ = ["HF_PREFIX", "resolve_run_dir"]

HF_PREFIX = "hf-hub:"


def resolve_run_dir(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local run directory for ``source``: the path itself, or the hub snapshot of ``hf-hub:REPO_ID``
    (downloaded with ``huggingface_hub.snapshot_download``; offline, the local cache is used). A local
    path that does not exist, or is not a directory, is a :class:`RunDirError` saying so."""
    text = str(source)
    if not text.startswith(HF_PREFIX):
        path = Path(source)
        if not path.is_dir():
            raise RunDirError(f"{path}: {'not a directory' if path.exists() else 'no such run directory'}")
        return path
    repo_id = text[len(HF_PREFIX):]
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir))
    except Exception as e:  # offline, unknown repository, no network: all one line for the user
        why = f"{type(e).__name__}: {first_line(e, 300)}"
        raise HubError(f"{text}: cannot get it from the Hugging Face hub ({why})") from None
