"""Recipes: the bundled files parse, and every kind of bad input is a one-line RecipeError naming key and file."""

import pytest
import yaml
from typer.testing import CliRunner

from ndeconv.cli import app
from ndeconv.errors import RecipeError
from ndeconv.recipe import apply_override, bundled_recipes, load_recipe, parse_recipe, recipe_to_dict

EXPECTED = {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet"}


def test_bundled_recipes_parse_and_carry_the_papers_cifar_settings():
    found = bundled_recipes()
    assert EXPECTED <= set(found)
    for path in found.values():
        recipe = load_recipe(path)
        assert recipe.name == path.stem
        assert len(recipe.data.mean) == recipe.data.channels
    c10 = load_recipe("cifar10")
    assert (c10.optim.name, c10.optim.lr, c10.optim.momentum, c10.optim.schedule) == ("sgd", 0.1, 0.9, "cosine")
    assert c10.train.batch_size == 128 and c10.augment.crop_padding == 4 and c10.augment.flip
    assert c10.model.norm == "deconv" and c10.model.deconv.block_fc == 512
    assert load_recipe("imagenet").augment.random_resized_crop
    assert load_recipe("cifar100").data.num_classes == 100


def test_round_trip_through_a_dict():
    recipe = load_recipe("cifar10")
    assert parse_recipe(recipe_to_dict(recipe)) == recipe


def _write(tmp_path, raw, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return path


def _base():
    return recipe_to_dict(load_recipe("digits"))


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r["optim"].update(lrr=0.1), "unknown key 'optim.lrr'"),
    (lambda r: r.update(extra=1), "unknown key 'extra'"),
    (lambda r: r["optim"].update(lr="fast"), "optim.lr must be a number, got 'fast'"),
    (lambda r: r["train"].update(epochs=-2.5), "train.epochs must be > 0, got -2.5"),
    (lambda r: r["train"].update(epochs=True), "train.epochs must be a number or null, got True"),
    (lambda r: r["model"].update(norm="layer"), "model.norm must be one of 'bn' | 'gn' | 'deconv' | 'none', got 'layer'"),
    (lambda r: r["model"]["deconv"].update(block="big"), "model.deconv.block must be an integer"),
    (lambda r: r["data"].update(mean=[0.1, 0.2]), "data.mean has 2 values, data.channels is 1"),
    (lambda r: r["data"].update(mean="0.5"), "data.mean must be a list of numbers"),
    (lambda r: r["train"].pop("epochs"), "train needs a length: epochs, budget or steps"),
    (lambda r: r.pop("model"), "missing required key 'model'"),
    (lambda r: r["optim"].update(lr=-1), "optim.lr must be > 0, got -1"),
    (lambda r: r["augment"].update(scale=[0.9, 0.1]), "augment.scale must be [min, max]"),
    (lambda r: r["data"].update(builtin=None), "data needs a source"),
])
def test_bad_recipe_is_one_line_naming_file_and_key(tmp_path, mutate, expected):
    raw = _base()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and expected in message


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(_write(tmp_path, "- 1\n- 2\n"))


def test_without_the_installed_recipes_a_bundled_name_is_one_line_and_files_still_load(tmp_path, monkeypatch):
    """A checkout imported without ``pip install`` has no ``ndeconv.recipes``: a bundled name is one line
    saying how to install them, a recipe file still loads, and a missing file is still "not found"."""
    import importlib.resources

    real = importlib.resources.files

    def files(package):
        if package == "ndeconv.recipes":
            raise ModuleNotFoundError(f"No module named {package!r}")
        return real(package)

    raw = _base()
    path = _write(tmp_path, raw)
    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(RecipeError, match=r"^the bundled recipes are not installed .*pip install -e \.") as info:
        load_recipe("cifar10")
    assert "\n" not in str(info.value)
    assert recipe_to_dict(load_recipe(path)) == raw
    with pytest.raises(RecipeError, match="absent.yaml: recipe file not found$"):
        load_recipe(tmp_path / "absent.yaml")


def test_overrides_are_typed_and_checked(tmp_path):
    recipe = load_recipe("digits", {"optim.lr": "0.2", "train.epochs": 3, "model.deconv.n_iter": "7"})
    assert recipe.optim.lr == 0.2 and recipe.train.epochs == 3 and recipe.model.deconv.n_iter == 7
    assert apply_override(recipe, "data.path", "some/dir").data.path == "some/dir"
    with pytest.raises(RecipeError,
                       match=r"^override optim\.lrr: unknown key 'optim\.lrr'; did you mean 'optim\.lr'\?"):
        apply_override(recipe, "optim.lrr", "1")
    with pytest.raises(RecipeError, match=r"^override train\.epochs: train\.epochs must be a number or null, "
                                          r"got 'many'"):
        apply_override(recipe, "train.epochs", "many")
    # the command line names its own option
    typed = CliRunner().invoke(app, ["train", "--set", "optim.lrr=1", "--out", str(tmp_path / "run")])
    assert typed.exit_code == 2 and "error: --set optim.lrr: unknown key 'optim.lrr'" in typed.output
    with pytest.raises(RecipeError, match="unknown key 'optim.lr.x'"):
        apply_override(recipe, "optim.lr.x", "1")


def test_overrides_apply_together_and_the_error_names_its_override():
    """Overrides are checked as one recipe: keys valid only together (three channels to one) apply,
    and a bad one is named by the option it came from."""
    gray = {"data.channels": 1, "data.mean": "[0.5]", "data.std": "[0.25]"}
    recipe = load_recipe("cifar10", gray)
    assert (recipe.data.channels, recipe.data.mean, recipe.data.std) == (1, [0.5], [0.25])
    with pytest.raises(RecipeError, match=r"^--std: data\.std has 2 values, data\.channels is 1$"):
        load_recipe("cifar10", {**gray, "data.std": "[0.2, 0.3]"}, {"data.std": "--std"})
