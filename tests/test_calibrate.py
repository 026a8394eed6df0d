"""Fine-tuning from a BN model: the conversion that keeps its function (``calibrate``), the frozen
mode, and the recipe keys that load pretrained weights and pick classes."""

import copy

import pytest
import timm
import torch
from torch import nn

import ndeconv
from ndeconv.layers import ChannelAffine
from ndeconv.recipe import load_recipe
from ndeconv.rundir import build_model, load_pretrained
from ndeconv.train import train
from tinydata import write_tiny_recipe


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Give every batch norm statistics and an affine that change what it computes."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


ARCHITECTURES = {  # plain, residual, pre-activation, timm's norm+act layers with depthwise convs
    "vgg11_cifar": (32, {}),
    "resnet18_cifar": (16, {}),
    "preactresnet18_cifar": (16, {}),
    "mobilenetv3_small_050": (32, {}),
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_converted_model_computes_the_bn_models_function(name):
    size, kwargs = ARCHITECTURES[name]
    torch.manual_seed(0)
    bn = _randomise_norms(timm.create_model(name, num_classes=5, **kwargs)).double().eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, size, size, generator=g, dtype=torch.float64) for _ in range(3)]
    converted = ndeconv.deconvolve(copy.deepcopy(bn), calibrate=batches).eval()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in converted.modules())
    x = torch.randn(4, 3, size, size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected, got = bn(x), converted(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
    if name == "preactresnet18_cifar":  # norms after a sum, not a conv: fixed affines where they were
        assert any(isinstance(m, ChannelAffine) for m in converted.modules())
    # and the plain conversion, today's, is another function
    plain = ndeconv.deconvolve(copy.deepcopy(bn)).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x), expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))


def test_calibration_sets_each_layers_running_estimates_from_the_bn_models_activations():
    """The first layer sees the input itself: its running mean and D are those of the input's patches."""
    torch.manual_seed(0)
    bn = _randomise_norms(timm.create_model("vgg11_cifar", num_classes=5)).double().eval()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64) * 2 + 1 for _ in range(2)]
    converted = ndeconv.deconvolve(copy.deepcopy(bn), calibrate=batches)
    stem = converted.features[0].conv
    samples = torch.cat([stem._patch_samples(b, stem.padding, stem.sampling_stride) for b in batches], dim=1)[0]
    mean = samples.mean(0)
    cov = (samples - mean).T @ (samples - mean) / len(samples) + stem.eps * torch.eye(samples.shape[1],
                                                                                    dtype=torch.float64)
    torch.testing.assert_close(stem.running_mean[0], mean)
    d = stem.running_deconv[0]
    torch.testing.assert_close(d @ cov @ d, torch.eye(len(d), dtype=torch.float64), rtol=1e-8, atol=1e-8)


def test_a_frozen_model_whitens_with_its_running_estimates_in_training_too():
    torch.manual_seed(0)
    model = ndeconv.deconvolve(timm.create_model("convnet3", num_classes=4, in_chans=3), scale="channel")
    x = torch.randn(16, 3, 12, 12)
    for _ in range(3):
        model(x * 1.5 + 0.2)
    ndeconv.freeze(model)
    model.train()  # a parent's .train() does not unfreeze it
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items() if not k.endswith("num_steps"))
    with torch.no_grad():
        torch.testing.assert_close(out, model.eval()(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ndeconv.fuse(model)(x), out, rtol=1e-5, atol=1e-5)
    out.sum().backward()  # the weights still train
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_recipe_fine_tunes_a_pretrained_bn_run_on_other_classes(tiny_parquet, tmp_path):
    """A BN run on all four classes is the start of a deconvolution run on two of them: the
    pretrained weights, converted with their function kept (the features match the BN model's),
    a new classifier for two classes."""
    bn_recipe = load_recipe(write_tiny_recipe(tmp_path / "bn.yaml", tiny_parquet),
                            {"model.norm": "bn", "train.epochs": 1})
    bn_run, _ = train(bn_recipe, tmp_path / "bn", progress=False)
    recipe = load_recipe(write_tiny_recipe(tmp_path / "ft.yaml", tiny_parquet), {
        "data.num_classes": 2, "data.classes": [3, 1], "model.pretrained": str(bn_run), "model.calibrate": 64,
        "train.epochs": 1})
    from ndeconv.data import load_splits

    splits = load_splits(recipe.data)
    assert set(splits.train[splits.label_column]) == {0, 1} and len(splits.train) == 128
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(16, 3, 16, 16, generator=g) for _ in range(2)]
    model = build_model(recipe, pretrained=True, calibration=batches).eval()
    reference = load_pretrained(timm.create_model("convnet3", num_classes=4), bn_run).eval()
    assert model.get_classifier().out_features == 2
    x = torch.randn(8, 3, 16, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x), rtol=1e-4, atol=1e-4)
    run, results = train(recipe, tmp_path / "ft", progress=False)
    assert results["status"] == "finished"


def test_pretrained_weights_that_do_not_fit_are_one_line(tiny_parquet, tmp_path):
    from ndeconv.errors import RecipeError

    torch.save({"state_dict": {"features.0.conv.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    model = timm.create_model("convnet3", num_classes=4)
    with pytest.raises(RecipeError, match=r"model.pretrained: .*bad.pth does not fit"):
        load_pretrained(model, tmp_path / "bad.pth")
    with pytest.raises(RecipeError, match="is not a weights file or a finished run directory"):
        load_pretrained(model, tmp_path / "missing.safetensors")
