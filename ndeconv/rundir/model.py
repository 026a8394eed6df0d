"""A recipe's model, built fresh or with a finished run's trained weights.

:func:`build_model` is the one place a recipe becomes a model (its task's architecture, from
timm's registry and ``ndeconv.models``, the initialisation, then the conversion rules); training
builds its model with it and loading rebuilds the same one, without fastai or Accelerate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model
from torch import Tensor, nn

from ..convert import convert_norm, deconvolve
from ..errors import RecipeError, RunDirError, first_line
from ..freeze import freeze
from ..fuse import fuse as fuse_model
from ..init import initialize
from ..recipe import Recipe
from ..tasks import Task, resolve_task
from ..tta import TTA
from .layout import CHECKPOINT, CONFIG, WEIGHTS, load_run_recipe
from .source import resolve_run_dir

__all__ = ["build_model", "load_run_model", "load_trained", "read_pretrained", "load_pretrained"]


def build_model(recipe: Recipe, task: Task | None = None, *, pretrained: bool = False,
                calibration: Sequence[Tensor] | None = None) -> nn.Module:
    """The recipe's task's architecture (a timm classifier, a segmentation model) for its data,
    initialised as ``model.init`` says, its norms converted to ``model.norm`` (``ndeconv.convert_norm``;
    ``task``: the recipe's, resolved by the caller; else resolved here).

    ``pretrained``: start from ``model.pretrained``'s weights (a training run does; a model whose
    weights come from a checkpoint or a run does not). With ``model.calibrate`` the conversion
    keeps the model's function, calibrated on ``calibration`` (input batches; without them, a
    random batch gives the same layers and buffers, for weights loaded afterwards), and
    ``model.freeze`` freezes the deconvolution layers.
    """
    m = recipe.model
    model = (task or resolve_task(recipe)).build_model(recipe)
    if pretrained and m.pretrained is not None:
        load_pretrained(model, m.pretrained)
    elif m.pretrained is None:
        initialize(model, m.init)
    if m.norm == "deconv":
        if m.calibrate:
            d = recipe.data
            batches = calibration or [torch.randn(2, d.channels, d.image_size, d.image_size)]
            deconvolve(model, m.deconv, calibrate=batches)
        else:
            deconvolve(model, m.deconv)
        if m.freeze:
            freeze(model)
    else:
        convert_norm(model, m.norm)
    return model


def read_pretrained(source: str | Path) -> dict[str, Tensor]:
    """The weights of ``source``: a finished run directory, a safetensors file, or a torch checkpoint
    (a state dict, or one under ``state_dict`` or ``model``), as plain tensors."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise RecipeError(f"model.pretrained: {source} is not a weights file or a finished run directory")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip raise many types for damaged files
        raise RecipeError(f"model.pretrained: {path} cannot be read ({first_line(e, 200)})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RecipeError(f"model.pretrained: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(model: nn.Module, source: str | Path) -> nn.Module:
    """Load ``source``'s weights (:func:`read_pretrained`) into ``model``; only the classifier may be
    left out (missing, or of another number of classes), where it keeps its initialisation."""
    state, own = read_pretrained(source), model.state_dict()
    head = getattr(model, "get_classifier", lambda: None)()
    prefix = next((name for name, m in model.named_modules() if m is head), None)
    head_keys = {f"{prefix}.{k}" for k in head.state_dict()} if prefix else set()
    state = {k: v for k, v in state.items() if not (k in head_keys and v.shape != own[k].shape)}
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and k not in head_keys]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        what = (f"shape of {wrong[0]}" if wrong else f"no {missing[0]}" if missing else f"an unknown {unexpected[0]}")
        raise RecipeError(f"model.pretrained: {source} does not fit {type(model).__name__} ({what})")
    model.load_state_dict(state, strict=False)
    return model


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, Recipe]:
    """The trained model of a finished run directory (eval mode) and its recipe."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        hint = " (training was interrupted: resume it to finish)" if (run_dir / CHECKPOINT).is_file() else ""
        raise RunDirError(f"{run_dir}: incomplete run, no {WEIGHTS}{hint}")
    model = build_model(recipe)
    try:
        load_model(model, str(weights))
    except (SafetensorError, OSError) as e:
        raise RunDirError(f"{weights}: unreadable weights, truncated or damaged ({first_line(e, 200)})") from None
    except (RuntimeError, KeyError) as e:
        raise RunDirError(f"{weights}: does not match the model in {CONFIG} ({first_line(e, 300)})") from None
    return model.eval(), recipe


def load_trained(source: str | Path, *, fuse: bool = False, tta: bool | None = None,
                 cache_dir: str | Path | None = None) -> tuple[nn.Module, Recipe, Path]:
    """A run's trained model in eval mode as it will be used (fused into plain convs with ``fuse``,
    wrapped in test-time augmentation with ``tta``; ``None``: as the run validated), its recipe and
    its local directory; ``source`` is a run directory or ``hf-hub:REPO_ID``."""
    run_dir = resolve_run_dir(source, cache_dir)
    model, recipe = load_run_model(run_dir)
    if fuse:
        model = fuse_model(model)
    if recipe.train.tta if tta is None else tta:
        model = TTA(model)
    return model.eval(), recipe, run_dir
