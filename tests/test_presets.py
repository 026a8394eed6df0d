"""Presets: a named bundle fills in the settings not given, wherever a preset is named (a
``DeconvConfig``, a recipe file, ``--set`` overrides in any order, a compare grid, ``deconvolve``'s
keywords); a setting given at the paper's default value still replaces the preset's."""

import dataclasses
from pathlib import Path

import timm
import yaml

import ndeconv
from ndeconv.compare.grid import _plan
from ndeconv.recipe import PRESETS, DeconvConfig, load_recipe, parse_recipe, recipe_to_dict

FAST = PRESETS["fast"]
PAPER = DeconvConfig()


def _settings(config: DeconvConfig) -> tuple:
    return config.block, config.scale, config.update_every


def test_a_preset_fills_in_what_is_not_given_also_against_a_default_value():
    assert _settings(DeconvConfig(preset="fast")) == (FAST["block"], FAST["scale"], FAST["update_every"])
    given_default = DeconvConfig(preset="fast", update_every=PAPER.update_every)
    assert _settings(given_default) == (FAST["block"], FAST["scale"], PAPER.update_every)


def test_a_recipe_files_setting_wins_over_its_preset(tmp_path):
    raw = recipe_to_dict(load_recipe("cifar10"))
    raw["model"]["deconv"] = {"preset": "fast", "update_every": PAPER.update_every, "block": PAPER.block}
    config = parse_recipe(raw).model.deconv
    assert _settings(config) == (PAPER.block, FAST["scale"], PAPER.update_every)


def test_a_preset_override_replaces_the_files_bundled_settings_and_other_overrides_win_in_any_order():
    file_block = load_recipe("cifar10").model.deconv.block
    assert file_block != FAST["block"]  # the bundled recipe spells out the paper's block
    alone = load_recipe("cifar10", {"model.deconv.preset": "fast"}).model.deconv
    assert _settings(alone) == (FAST["block"], FAST["scale"], FAST["update_every"])
    for overrides in ({"model.deconv.update_every": "1", "model.deconv.preset": "fast"},
                      {"model.deconv.preset": "fast", "model.deconv.update_every": "1"}):
        config = load_recipe("cifar10", overrides).model.deconv
        assert _settings(config) == (FAST["block"], FAST["scale"], 1), overrides
    later = load_recipe("cifar10", {"model.deconv.preset": "fast", "optim.lr": "0.05"}).model.deconv
    assert _settings(later) == _settings(alone)


def test_a_resolved_recipe_reads_back_the_same():
    recipe = load_recipe("cifar10", {"model.deconv.preset": "fast", "model.deconv.update_every": "1"})
    assert parse_recipe(yaml.safe_load(yaml.safe_dump(recipe_to_dict(recipe)))) == recipe


def test_a_compare_grid_applies_its_preset_before_its_other_keys():
    grid = {"model.deconv.update_every": ["1", "3"], "model.deconv.preset": ["paper", "fast"]}
    plan = _plan(load_recipe("cifar10"), ["vgg11_cifar"], [1], Path("unused"), grid, None, ["deconv"])
    got = {(dict(cell.setting)["model.deconv.preset"], dict(cell.setting)["model.deconv.update_every"]):
           _settings(variant.model.deconv) for cell, variant in plan}
    assert got == {("paper", "1"): (PAPER.block, PAPER.scale, 1), ("paper", "3"): (PAPER.block, PAPER.scale, 3),
                   ("fast", "1"): (FAST["block"], FAST["scale"], 1), ("fast", "3"): (FAST["block"], FAST["scale"], 3)}


def _layer_settings(model) -> set:
    """(block, update_every) of the conv layers past the stem (whose 3 channels make one block)."""
    return {(m.block, m.update_every) for m in model.modules()
            if isinstance(m, ndeconv.FastDeconv) and m.in_channels > 3}


def test_deconvolve_keywords_on_a_config_with_or_without_a_preset():
    def convert(config=None, **settings):
        return ndeconv.deconvolve(timm.create_model("resnet18", num_classes=10), config, **settings)

    assert _layer_settings(convert(preset="fast", update_every=1)) == {(FAST["block"], 1)}
    assert _layer_settings(convert(DeconvConfig(preset="fast"), update_every=1)) == {(FAST["block"], 1)}
    # a preset keyword replaces the bundled settings of the config it is given on top of
    assert _layer_settings(convert(DeconvConfig(block=8, update_every=3), preset="fast")) == \
        {(FAST["block"], FAST["update_every"])}
    assert dataclasses.replace(DeconvConfig(preset="fast"), update_every=1).update_every == 1
