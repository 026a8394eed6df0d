"""Recipe files: a path or a bundled recipe's name, read and parsed with overrides.

Part of the configuration leaf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from .parse import apply_overrides, parse_recipe, read_yaml
from .schema import Recipe

__all__ = ["load_recipe", "read_text_file", "bundled_recipes", "find_recipe"]


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None,
                sources: dict[str, str] | None = None) -> Recipe:
    """Read a recipe file (or a bundled recipe's name) and apply ``{dotted.key: value}`` overrides;
    ``sources`` names where each override came from, for its errors (the command line passes the
    option it read it from). A ``model.deconv.preset`` override applies first, so the other
    overrides win over what it bundles."""
    file = find_recipe(path)
    try:
        raw = read_yaml(read_text_file(file, "recipe"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{file}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    recipe = parse_recipe(raw, str(file))
    return apply_overrides(recipe, overrides, sources) if overrides else recipe


def read_text_file(path: Path, what: str) -> str:
    """A text file's contents; a binary or undecodable one is a :class:`RecipeError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a {what} (not UTF-8 text: byte {e.start} cannot be decoded)") from None


def bundled_recipes() -> dict[str, Path]:
    """The recipes shipped with ndeconv: ``{name: path}``. Without them (the package imported from a
    checkout that was never ``pip install``-ed) a :class:`RecipeError` says how to get them."""
    from importlib import resources

    try:
        root = Path(str(resources.files("ndeconv.recipes")))
    except ModuleNotFoundError:
        raise RecipeError("the bundled recipes are not installed (no package ndeconv.recipes): "
                          "pip install -e . in the repository, or name a recipe file") from None
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def find_recipe(path: str | Path) -> Path:
    """A recipe file path, or the bundled recipe of that name (``cifar10`` -> ``recipes/cifar10.yaml``)."""
    file = Path(path)
    if file.is_file():
        return file
    bundled = {} if file.suffix else bundled_recipes()
    if str(path) in bundled:
        return bundled[str(path)]
    if file.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    hint = f" (bundled recipes: {', '.join(bundled)})" if bundled else ""
    raise RecipeError(f"{path}: recipe file not found{hint}")
