"""Finished runs as models: load one in a single call (from a run directory or the Hugging Face
hub) and share one on the hub, the way timm models load and share.

Loading needs neither fastai nor Accelerate (a test loads a run with both unimportable).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import HubError, RunDirError, first_line
from .recipe import Recipe
from .rundir import HF_PREFIX, LOCAL_ONLY, RESULTS, is_finished, load_run_recipe, load_trained, resolve_run_dir
from .tta import TTA

__all__ = ["HF_PREFIX", "load", "push", "resolve_run_dir"]

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
    model, recipe, _ = load_trained(source, fuse=fuse, tta=tta, cache_dir=cache_dir)
    base = model.model if isinstance(model, TTA) else model
    model.pretrained_cfg = model.default_cfg = _pretrained_cfg(base, recipe)
    return model


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
        message = f"ndeconv: {recipe.model.name} ({recipe.model.norm}) on {recipe.name}"
        commit = api.upload_folder(folder_path=run_dir, repo_id=repo_id, ignore_patterns=list(LOCAL_ONLY),
                                   commit_message=message)
    except Exception as e:  # no network, no token, refused: one line
        why = f"{type(e).__name__}: {first_line(e, 300)}"
        raise HubError(f"{repo_id}: cannot upload to the Hugging Face hub ({why})") from None
    return str(getattr(commit, "commit_url", commit))
