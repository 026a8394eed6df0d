"""Typed parsing of recipes: YAML read as people write numbers, every key and type checked against
the schema (all problems of a mapping reported together), overrides by dotted key.

Part of the configuration leaf: standard library, PyYAML and the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Any, Mapping

import yaml

from ..errors import RecipeError
from .deconv import REMOVED, REMOVED_IN, DeconvConfig, presets_first, with_setting
from .schema import LENGTH_KEYS, Recipe
from .types import check_type, quote

__all__ = ["RecipeLoader", "read_yaml", "parse_recipe", "recipe_to_dict", "apply_override", "apply_overrides"]


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as people write them: ``5e-4`` and ``1E5`` are floats
    (YAML 1.2's rule; YAML 1.1 wants a dot, ``5.0e-4``, and reads the rest as strings)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    """Parse recipe YAML (see :class:`RecipeLoader`)."""
    return yaml.load(text, Loader=RecipeLoader)


# --- typed parsing ---------------------------------------------------------------------------

def _did_you_mean(key: str, known: list[str], prefix: str) -> str:
    """A hint naming the full dotted key closest to ``key`` among ``known`` (under ``prefix``)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """``cls(**raw)`` with every key checked; all problems of ``raw`` are reported together."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for key in raw:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            hint = _did_you_mean(str(key), list(fields), prefix) or f" (known in {prefix or 'the top level'}: " \
                f"{', '.join(fields)})"
            problems.append(f"unknown key '{where}'{hint}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in raw and cls is DeconvConfig:  # its settings check their own types and ranges
            kwargs[name] = raw[name]
        elif name in raw:
            try:
                kwargs[name] = check_type(hints[name], raw[name], where, _build)
            except RecipeError as e:
                problems.append(str(e))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"missing required key '{where}'")
    if problems:
        raise RecipeError("; ".join(problems))
    try:
        return cls(**kwargs)
    except RecipeError as e:
        raise RecipeError(f"{prefix}.{e}" if prefix else str(e)) from None


def parse_recipe(raw: Any, source: str = "<recipe>") -> Recipe:
    """Build a :class:`Recipe` from a mapping; errors name ``source`` and every bad key."""
    if raw is None:
        raise RecipeError(f"{source}: the recipe is empty")
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    try:
        return _build(Recipe, _without_removed(raw), "")
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None


def _without_removed(raw: dict) -> dict:
    """``raw`` without the removed ``model.deconv`` settings that hold the value every layer now
    behaves as (a run directory written before their removal lists them all); another value is an error."""
    deconv = raw.get("model", {}).get("deconv") if isinstance(raw.get("model"), dict) else None
    if not isinstance(deconv, dict) or not REMOVED.keys() & deconv.keys():
        return raw
    for name, kept in REMOVED.items():
        if name in deconv and deconv[name] != kept:
            raise RecipeError(f"model.deconv.{name} was removed in ndeconv {REMOVED_IN} (it never came out ahead); "
                              f"only {quote(kept)} is accepted, got {quote(deconv[name])}")
    kept = {k: v for k, v in deconv.items() if k not in REMOVED}
    return {**raw, "model": {**raw["model"], "deconv": kept}}


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain data (what ``config.yaml`` holds); ``parse_recipe`` inverts it."""
    return dataclasses.asdict(recipe)


def apply_override(recipe: Recipe, key: str, value: Any, source: str | None = None) -> Recipe:
    """A copy of ``recipe`` with the dotted ``key`` set to ``value`` (see :func:`apply_overrides`)."""
    return apply_overrides(recipe, {key: value}, {key: source} if source else None)


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> Recipe:
    """A copy of ``recipe`` with each dotted key of ``overrides`` set, checked and parsed once.

    Strings are read as YAML scalars (``"0.05"`` gives a float, ``"5e-4"`` too); values are
    type-checked like the file's. A ``model.deconv.preset`` applies first and replaces the settings
    its bundle gives, also where the recipe gave them (``block: 64`` in a file, ``preset=fast`` on the
    command line: ``fast``'s block); the other keys win over it. A new length (``train.epochs``,
    ``steps`` or ``budget``) replaces the recipe's. An error names the override it comes from
    (``sources[key]``, default ``override <key>``).
    """
    raw, sources = recipe_to_dict(recipe), sources or {}
    keys = presets_first(overrides)
    for key in keys:
        _set(raw, key, overrides[key], sources.get(key) or f"override {key}")
    try:
        return _build(Recipe, raw, "")
    except RecipeError as e:
        key = next((k for k in reversed(keys) if k in str(e)), keys[-1] if keys else None)
        raise RecipeError(f"{sources.get(key) or f'override {key}'}: {e}") from None


def _set(raw: dict, key: str, value: Any, source: str) -> None:
    """Set the dotted ``key`` of the recipe mapping ``raw`` (an unknown key is an error naming it in full)."""
    node, parts, cls = raw, key.split("."), Recipe
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        if part not in names:
            where = ".".join(parts[: i + 1])
            if parts[:2] == ["model", "deconv"] and part in REMOVED:
                raise RecipeError(f"{source}: {where} was removed in ndeconv {REMOVED_IN} (it never came out ahead)")
            hint = _did_you_mean(part, names, ".".join(parts[:i])) or (f" (known: {', '.join(names)})" if names else "")
            raise RecipeError(f"{source}: unknown key '{where}'{hint}")
        if i < len(parts) - 1:
            cls = typing.get_type_hints(cls)[part]
            node = node[part]
    if isinstance(value, str):
        try:
            value = read_yaml(value) if value.strip() else value
        except yaml.YAMLError:
            pass
    if len(parts) == 3 and parts[:2] == ["model", "deconv"]:
        raw["model"]["deconv"] = with_setting(raw["model"]["deconv"], parts[2], value)
    else:
        node[parts[-1]] = value
    if parts[:-1] == ["train"] and parts[-1] in LENGTH_KEYS and value is not None:
        for other in (*LENGTH_KEYS, "step_seconds"):  # a new length replaces the recipe's (epochs by budget, ...)
            if other != parts[-1]:
                node[other] = None
