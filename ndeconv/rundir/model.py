"""A recipe's model, built fresh or with a finished run's trained weights.

:func:`build_model` is the one place a recipe becomes a model (its task's architecture, from
timm's registry and ``ndeconv.models``, the initialisation, then the conversion rules); training
builds its model with it and loading rebuilds the same one, without fastai or Accelerate.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from ..convert import deconvolve
from ..errors import RunDirError, first_line
from ..init import initialize
from ..recipe import Recipe
from ..tasks import get_task
from .layout import CHECKPOINT, CONFIG, WEIGHTS, load_run_recipe

__all__ = ["build_model", "load_run_model"]


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's task's architecture (a timm classifier, a segmentation model) for its data,
    initialised as ``model.init`` says, deconvolved when ``model.norm`` is ``deconv``."""
    model = get_task(recipe.task).build_model(recipe)
    initialize(model, recipe.model.init)
    if recipe.model.norm == "deconv":
        deconvolve(model, recipe.model.deconv)
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
