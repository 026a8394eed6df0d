"""Finished runs as models: load one in a single call (from a run directory or the Hugging Face
hub) and share one on the hub, the way timm models load and share.

Loading needs neither fastai nor Accelerate (a test loads a run with both unimportable).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import HubError, RunDirError
from .fuse import fuse as fuse_model
from .recipe import Recipe
from .rundir import (LOCAL_ONLY, RESULTS, is_finished, load_run_model, load_run_recipe)
from .tta import TTA

__all__ = ["HF_PREFIX", "load", "push", "resolve_run_dir"]

HF_PREFIX = "hf-hub:"


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def resolve_run_dir(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local run directory for ``source``: the path itself, or the hub snapshot of ``hf-hub:REPO_ID``
    (downloaded with ``huggingface_hub.snapshot_download``; offline, the local cache is used)."""
    text = str(source)
    if not text.startswith(HF_PREFIX):
        return Path(source)
    repo_id = text[len(HF_PREFIX):]
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir))
    except Exception as e:  # offline, unknown repository, no network: all one line for the user
        raise HubError(f"{text}: cannot get it from the Hugging Face hub ({_one_line(e)})") from None


def _pretrained_cfg(model: nn.Module, recipe: Recipe) -> dict:
    d = recipe.data
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(input_size=(d.channels, d.image_size, d.image_size), mean=tuple(d.mean), std=tuple(d.std),
               num_classes=d.num_classes, crop_pct=1.0, interpolation=cfg.get("interpolation", "bilinear"),
               ndeconv={"norm": recipe.model.norm, "recipe": recipe.name})
    return cfg


def load(source: str | Path, *, fuse: bool = False, tta: bool | None = None,
         cache_dir: str | Path | None = None) -> nn.Module:
    """The trained model of a finished run, in eval mode: ``source`` is a run directory or ``hf-hub:REPO_ID``.

    The model is as it was trained (deconvolved or with BN); ``fuse=True`` folds the deconvolution
    into plain convs (:func:`ndeconv.fuse`). ``tta`` wraps it in :class:`ndeconv.tta.TTA` (test-time
    augmentation in eval; ``None``: as the run validated, ``train.tta``). ``model.pretrained_cfg``
    says what it expects as input (size, mean, std) and how many classes it predicts, as for a
    timm model.
    """
    model, recipe = load_run_model(resolve_run_dir(source, cache_dir))
    cfg = _pretrained_cfg(model, recipe)
    if fuse:
        model = fuse_model(model)
    if recipe.train.tta if tta is None else tta:
        model = TTA(model)
    model.pretrained_cfg = model.default_cfg = cfg
    return model.eval()


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a finished run directory (model, recipe, metrics, model card; not the resume
    checkpoint) to the hub repository ``repo_id``, creating it if needed. Returns the commit URL."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)  # a run directory, or a one-line error saying what it is not
    if not is_finished(run_dir):
        raise RunDirError(f"{run_dir}: the run has not finished (no {RESULTS}); only finished runs can be pushed")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=run_dir, repo_id=repo_id, ignore_patterns=list(LOCAL_ONLY),
                                   commit_message=f"ndeconv: {recipe.model.name} ({recipe.model.norm}) on {recipe.name}")
    except Exception as e:  # no network, no token, refused: one line
        raise HubError(f"{repo_id}: cannot upload to the Hugging Face hub ({_one_line(e)})") from None
    return str(getattr(commit, "commit_url", commit))
