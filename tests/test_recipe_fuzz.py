"""Property: any ``--set`` string or recipe mutation loads into a recipe that can train, or is one
``NdeconvError`` line of bounded length; nothing else (no other exception, no NaN let through)."""

import dataclasses
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndeconv.errors import NdeconvError
from ndeconv.recipe import Recipe, apply_override, find_recipe, load_recipe, parse_recipe

BASE = load_recipe("digits")
SECTIONS = ("data", "model", "optim", "train", "augment")
KEYS = [f"{name}.{f.name}" for name in SECTIONS for f in dataclasses.fields(getattr(BASE, name))]
KEYS += [f"model.deconv.{f.name}" for f in dataclasses.fields(BASE.model.deconv)]
KEYS += ["model.deconv.nope", "optim", "name", "task"]

VALUES = st.one_of(
    st.sampled_from(["nan", ".nan", "inf", "-.inf", "1e400", "5e-4", "1E5", "-3", "0", "[0.5, 2]", "{a: 1}",
                     "99999999999999999999", "true", "null", "", "[min, max]", "fast", "90s", "-3m", "1e1000",
                     "&a [1, *a]", "!!python/object:os.system", "\x00", "'" * 3]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=40),
)


def _assert_trainable(recipe: Recipe) -> None:
    """What every loaded recipe must satisfy: finite numbers, positive sizes and rates, sane limits."""
    def numbers(node):
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                yield from numbers(getattr(node, f.name))
        elif isinstance(node, list):
            for v in node:
                yield from numbers(v)
        elif isinstance(node, float):
            yield node

    assert all(math.isfinite(v) for v in numbers(recipe))
    assert recipe.optim.lr > 0 and recipe.train.batch_size > 0 and 0 <= recipe.train.seed < 2**32
    assert recipe.model.deconv.n_iter >= 1 and recipe.model.deconv.update_every >= 1
    d = recipe.data  # sizes a loaded recipe can be trusted with (beyond them memory runs out first)
    assert d.image_size <= 8192 and d.num_classes <= 10**6 and recipe.train.batch_size <= 65536
    t = recipe.train
    assert (t.epochs is not None) + (t.budget is not None) + (t.steps is not None and t.budget is None) == 1


def _one_line(error: NdeconvError) -> None:
    text = str(error)
    assert "\n" not in text and len(text) < 2000, text[:300]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_set_strings_load_or_are_one_bounded_error(key, value):
    try:
        recipe = apply_override(BASE, key, value)
    except NdeconvError as e:
        _one_line(e)
        return
    _assert_trainable(recipe)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(["data", "model", "optim", "train", "augment", "deconv", "lr", "epochs",
                                      "image_size", "budget", "seed", "x"]), min_size=1, max_size=3),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                       st.lists(st.floats(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                           max_size=2)))
def test_recipe_mutations_load_or_are_one_bounded_error(path, value):
    raw = yaml.safe_load(find_recipe("digits").read_text())
    node = raw
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    try:
        recipe = parse_recipe(raw, "mutated.yaml")
    except NdeconvError as e:
        _one_line(e)
        return
    _assert_trainable(recipe)
