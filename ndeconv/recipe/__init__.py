"""Recipes: typed training configurations loaded from YAML, with validation and overrides.

A recipe file has five sections (``data``, ``model``, ``optim``, ``train``, ``augment``) plus a
``name`` and a ``task``. Loading checks every key and type against the schema; a problem is a
:class:`~ndeconv.errors.RecipeError` whose one-line message names the file and the dotted key.
Whether the task exists and its data fits it is the task registry's check
(:func:`ndeconv.tasks.resolve_task`), made wherever a recipe is run.

The configuration leaf: it imports nothing of ndeconv but its errors, and neither torch nor any
training library (``lint-imports`` checks it).
"""

from .deconv import PRESETS, DeconvConfig, presets_first
from .files import bundled_recipes, find_recipe, load_recipe, read_text_file
from .parse import RecipeLoader, apply_override, apply_overrides, parse_recipe, read_yaml, recipe_to_dict
from .schema import (LENGTH_KEYS, LIMITS, AugmentSpec, DataSpec, Init, ModelSpec, OptimSpec, Recipe, TrainSpec,
                     budget_label, parse_budget, quote)

__all__ = [
    "Recipe", "DataSpec", "ModelSpec", "OptimSpec", "TrainSpec", "AugmentSpec", "DeconvConfig", "PRESETS", "Init",
    "load_recipe", "parse_recipe", "apply_override", "apply_overrides", "recipe_to_dict", "find_recipe",
    "bundled_recipes",
    "LENGTH_KEYS", "LIMITS", "parse_budget", "budget_label", "read_yaml", "read_text_file", "quote",
    "RecipeLoader", "presets_first",
]
