"""Starting weights (``model.init``) and the per-architecture first-layer settings."""

import math

import pytest
import timm
import torch
from torch import nn

import ndeconv
from ndeconv.models import CIFAR_MODELS, PAPER_STEM
from ndeconv.recipe import load_recipe
from ndeconv.rundir import build_model


def _weighted(model):
    """Every conv and linear weight with its fan-in (computed here from the shape, not by torch)."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().double()
            yield name, w, w[0].numel()


def _is_pytorch_default(w, fan_in):
    """PyTorch's default: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1/(3 fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    var = w.square().mean().item()
    rel = 4.0 / math.sqrt(w.numel())  # 4 standard errors of a uniform variance estimate (sd/mean = 2/sqrt(5))
    return w.abs().max().item() <= bound * (1 + 1e-6) and abs(var * 3 * fan_in - 1) < max(rel, 0.02)


def test_reset_parameters_gives_pytorch_defaults_where_timm_differs():
    torch.manual_seed(0)
    model = timm.create_model("resnet18_cifar")
    before = {n: w for n, w, _ in _weighted(model)}
    # timm's ResNet init is kaiming_normal_ (fan-out): several times PyTorch's squared norm
    assert not _is_pytorch_default(before["layer1.0.conv1"], 64 * 9)
    ndeconv.reset_parameters(model)
    for name, w, fan_in in _weighted(model):
        if w.numel() >= 1000:
            assert _is_pytorch_default(w, fan_in), name
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # timm zero-inits some


@pytest.mark.parametrize("init", ["pytorch", "model"])
def test_recipe_init_option_reaches_the_built_model(init):
    recipe = load_recipe("cifar10", {"model.name": "resnet18_cifar", "model.init": init, "model.norm": "bn"})
    torch.manual_seed(1)
    built = build_model(recipe)
    torch.manual_seed(1)
    own = timm.create_model("resnet18_cifar", num_classes=10)
    w, ref = built.layer2[0].conv1.weight, own.layer2[0].conv1.weight
    if init == "model":
        assert torch.equal(w, ref)
    else:
        assert not torch.equal(w, ref) and _is_pytorch_default(w.detach().double(), 64 * 9)


def test_deconvolve_keeps_the_weights_it_is_given():
    model = timm.create_model("resnet18_cifar")
    w = model.layer1[0].conv1.weight.detach().clone()
    ndeconv.deconvolve(model)
    assert torch.equal(model.layer1[0].conv1.weight, w)


def test_bundled_recipes_start_from_the_papers_init():
    """All but the speed-record recipe, whose network's own initialisation (identity convs, a stem
    fitted to data) is part of the published recipe."""
    from ndeconv.recipe import bundled_recipes

    inits = {name: load_recipe(p).model.init for name, p in bundled_recipes().items()}
    assert inits.pop("cifar10_speedrun") == "model" and set(inits.values()) == {"pytorch"}


def _stem(model):
    return next(m for m in model.modules() if isinstance(m, ndeconv.FastDeconv))


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_paper_first_layer_settings_reach_the_stem(name):
    model = build_model(load_recipe("cifar10", {"model.name": name}))
    stem = _stem(model)
    expected = PAPER_STEM.get(name, {"n_iter": 5, "freeze_iter": None})
    assert (stem.n_iter, stem.freeze_iter) == (expected["n_iter"], expected.get("freeze_iter"))
    later = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)][1:]
    assert {(m.n_iter, m.freeze_iter) for m in later} == {(5, None)}


def test_vgg_stem_estimate_freezes_after_100_steps():
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar"))
    stem = _stem(model)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(100):
        stem(x)
    frozen = stem.running_deconv.clone()
    stem(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert torch.equal(stem.running_deconv, frozen)


def test_explicit_stem_settings_override_the_architecture():
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar"), stem_n_iter=7, stem_freeze_iter=3)
    assert (_stem(model).n_iter, _stem(model).freeze_iter) == (7, 3)
    recipe = load_recipe("cifar10", {"model.name": "resnet18_cifar", "model.deconv.stem_n_iter": 15})
    assert _stem(build_model(recipe)).n_iter == 15
