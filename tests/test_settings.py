"""One home per setting: every ``DeconvConfig`` setting's type and range live in its field's metadata,
and a bad value is the same one-line error from a recipe file, from ``deconvolve(..., key=value)`` and
from a layer's constructor (a test per setting and bad value, generated from the metadata)."""

import dataclasses
import typing

import pytest
import yaml
from torch import nn

import ndeconv
from ndeconv.errors import RecipeError
from ndeconv.recipe import DeconvConfig, load_recipe, recipe_to_dict
from ndeconv.recipe.deconv import Range

#: The settings a conv deconvolution layer takes itself (the others shape the conversion).
LAYER_SETTINGS = set(DeconvConfig().layer_settings()) - {"freeze_iter"}


def _bad_values(f: dataclasses.Field) -> list:
    """Values outside the setting's type or range: each side of a range, a wrong choice, a wrong type."""
    tp, valid = typing.get_type_hints(DeconvConfig)[f.name], f.metadata["range"]
    bad = []
    if isinstance(valid, Range):
        bad.append(valid.low if valid.open_low else valid.low - 1)
        if valid.high is not None:
            bad.append(valid.high + 1)
    if typing.Literal in (typing.get_origin(tp), *map(typing.get_origin, typing.get_args(tp))):
        bad.append("bogus")
    bad.append(2 if bool in typing.get_args(tp) or tp is bool else "x")
    return bad


CASES = [(f.name, value) for f in dataclasses.fields(DeconvConfig) for value in _bad_values(f)]


def test_every_setting_is_described_once_with_its_range():
    for f in dataclasses.fields(DeconvConfig):
        assert f.metadata["doc"].strip(), f.name
        tp = typing.get_type_hints(DeconvConfig)[f.name]
        numeric = {int, float} & {tp, *typing.get_args(tp)}
        assert (f.metadata["range"] is not None) == bool(numeric), f.name


@pytest.mark.parametrize("name, value", CASES, ids=[f"{n}={v!r}" for n, v in CASES])
def test_a_bad_value_is_the_same_error_everywhere(name, value, tmp_path):
    raw, recipe = recipe_to_dict(load_recipe("digits")), tmp_path / "recipe.yaml"
    raw["model"]["deconv"] = {name: value}
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError) as from_recipe:
        load_recipe(recipe)
    with pytest.raises(RecipeError) as from_deconvolve:
        ndeconv.deconvolve(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), **{name: value})
    message = str(from_deconvolve.value)
    assert message.startswith(f"{name} must be ") and message.endswith(f"got {value!r}") and "\n" not in message
    assert str(from_recipe.value) == f"{recipe}: model.deconv.{message}"
    if name in LAYER_SETTINGS:
        with pytest.raises(RecipeError) as from_layer:
            ndeconv.FastDeconv(4, 4, 3, **{name: value})
        assert str(from_layer.value) == message
