"""deconvolve(), the rule registry and the paper's CIFAR models."""


import pytest
import timm
import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

import ndeconv
from ndeconv.models import CIFAR_MODELS, PAPER_PARAMS_M
from ndeconv.recipe import load_recipe
from ndeconv.rules import is_depthwise
from ndeconv.rundir import build_model


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_cifar_models_are_in_timms_registry():
    assert set(timm.list_models("*_cifar")) >= set(CIFAR_MODELS)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_cifar_parameter_counts_match_the_paper(name):
    params = _params(timm.create_model(name, num_classes=10)) / 1e6
    assert abs(params - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.03, params


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_model_bn_and_deconvolved_train(name):
    model = timm.create_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    convs = _count(model, nn.Conv2d) - sum(is_depthwise(m) for m in model.modules())
    ndeconv.deconvolve(model)
    assert _count(model, _NormBase) == 0 and _count(model, BatchNormAct2d) == 0
    assert _count(model, ndeconv.FastDeconv) == convs
    assert isinstance(model.get_classifier(), ndeconv.Delinear)
    model.zero_grad()
    out = model(x)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_depthwise_convs_stay_plain():
    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                             nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=2))
    kept = ndeconv.deconvolve(build())
    assert type(kept[2]) is nn.Conv2d and isinstance(kept[3], nn.Identity)
    assert isinstance(kept[0], ndeconv.FastDeconv) and isinstance(kept[4], ndeconv.FastDeconv)  # grouped, not depthwise
    recipe = load_recipe("cifar10", {"model.name": "mobilenetv2_cifar"})
    model = build_model(recipe)
    assert not any(isinstance(m, ndeconv.FastDeconv) and m.groups == m.in_channels > 1 for m in model.modules())
    assert sum(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules()) == 17


def test_fast_options_reach_every_whitening_layer_from_deconvolve_and_the_recipe():
    recipe = load_recipe("cifar10", {"model.name": "resnet18_cifar", "model.deconv.stats_grad": False,
                                     "model.deconv.max_samples": 300})
    layers = [m for m in build_model(recipe).modules() if isinstance(m, (ndeconv.FastDeconv, ndeconv.Delinear))]
    assert len(layers) == 21 and all(not m.stats_grad and m.max_samples == 300 for m in layers)
    default = [m for m in build_model(load_recipe("cifar10", {"model.name": "resnet18_cifar"})).modules()
               if isinstance(m, (ndeconv.FastDeconv, ndeconv.Delinear))]
    assert all(m.stats_grad and m.max_samples is None for m in default)


def _settings(model):
    """Every whitening layer's settings, by path."""
    keys = ("block", "eps", "n_iter", "freeze_iter", "update_every", "max_samples")
    return {name: tuple(getattr(m, k, None) for k in keys) for name, m in model.named_modules()
            if isinstance(m, (ndeconv.FastDeconv, ndeconv.Delinear))}


def test_deconvolve_takes_a_config_and_keywords_on_top_by_name():
    config = ndeconv.DeconvConfig(block=16, block_fc=64, n_iter=3, update_every=2)
    from_config = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), config, max_samples=500)
    by_keyword = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), block=16, block_fc=64,
                                    n_iter=3, update_every=2, max_samples=500)
    assert _settings(from_config) == _settings(by_keyword)
    head, stem = from_config.get_classifier(), from_config.features[0].conv
    assert head.block == 64 and head.max_samples == 500  # block_fc reaches the classifier, block the convs
    assert (stem.block, stem.n_iter, stem.freeze_iter) == (3, 15, 100)  # the architecture's stem settings
    convs = [m for m in from_config.modules() if isinstance(m, ndeconv.FastDeconv)]
    assert convs[0] is stem and all(c.block == 16 and c.update_every == 2 and c.n_iter == 3 for c in convs[1:])
    with pytest.raises(TypeError, match="unknown setting 'blok' .*block, block_fc"):
        ndeconv.deconvolve(timm.create_model("vgg11_cifar"), blok=3)


class MyNorm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x):
        return x * self.scale / x.std(dim=(2, 3), keepdim=True)


def _custom_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), MyNorm(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def test_unknown_norm_is_a_clear_error_or_a_warning():
    with pytest.raises(ndeconv.UnsupportedLayerError, match=r"layer '1' of type .*MyNorm") as raised:
        ndeconv.deconvolve(_custom_model())
    assert isinstance(raised.value, ndeconv.NdeconvError)  # one family of input errors for callers and the CLI
    with pytest.warns(UserWarning, match="kept layer '1'"):
        model = ndeconv.deconvolve(_custom_model(), strict=False)
    assert isinstance(model[1], MyNorm) and isinstance(model[0], ndeconv.FastDeconv)
    assert model.deconv_report.skipped[0][0] == "1"


def test_unsupported_conv_type_is_named():
    model = nn.Sequential(nn.ConvTranspose3d(3, 4, 3))
    with pytest.raises(ndeconv.UnsupportedLayerError, match="ConvTranspose3d"):
        ndeconv.deconvolve(model)


def test_register_rule_extends_the_registry():
    try:
        @ndeconv.register_rule(MyNorm)
        def drop_my_norm(module, ctx):
            return nn.Identity()

        model = ndeconv.deconvolve(_custom_model())
        assert isinstance(model[1], nn.Identity)
        assert "drop_my_norm" in ndeconv.list_rules().values()
    finally:
        from ndeconv import rules

        rules._RULES["deconv"].pop(MyNorm)


def test_converting_twice_is_a_no_op():
    model = ndeconv.deconvolve(timm.create_model("resnet18_cifar", num_classes=10))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    ndeconv.deconvolve(model)
    assert model.deconv_report.changes == []
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_norm_act_layers_keep_activation_and_report_lists_changes():
    model = timm.create_model("vgg11_cifar", num_classes=10)
    ndeconv.deconvolve(model)
    first = model.features[0]
    assert isinstance(first.bn, ndeconv.NormFreeAct) and isinstance(first.bn[1], nn.ReLU)
    counts = model.deconv_report.counts()
    assert counts["Conv2d -> FastDeconv"] == 8 and counts["BatchNormAct2d -> NormFreeAct"] == 8
    assert counts["Linear -> Delinear"] == 1


def test_the_report_names_the_preset_and_the_settings_that_differ_from_the_papers():
    """The architecture's own stem settings are the paper's; a preset's bundle and a keyword are not."""
    paper = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10)).deconv_report
    assert paper.preset is None and paper.settings == {}
    assert str(paper).splitlines()[0] == "settings: no preset; the paper's"
    fast = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), preset="fast", eps=1e-4).deconv_report
    assert fast.preset == "fast"
    assert fast.settings == {**ndeconv.PRESETS["fast"], "eps": 1e-4}
    assert str(fast).splitlines()[0].startswith("settings: preset 'fast'; differ from the paper's: block=16, ")


def test_block_fc_zero_keeps_the_linear_head():
    model = ndeconv.deconvolve(timm.create_model("resnet18_cifar", num_classes=10), block_fc=0)
    assert type(model.get_classifier()) is nn.Linear


def test_converted_conv_computes_what_fast_deconv_from_that_conv_computes():
    model = timm.create_model("resnet18_cifar", num_classes=10)
    conv = model.layer2[0].conv1
    expected_layer = ndeconv.FastDeconv.from_conv(conv, bias=True, block=16, sampling_stride=2, n_iter=7, eps=1e-3)
    ndeconv.deconvolve(model, block=16, sampling_stride=2, n_iter=7, eps=1e-3)
    converted = model.layer2[0].conv1
    assert (converted.block, converted.sampling_stride, converted.n_iter, converted.eps) == (16, 2, 7, 1e-3)
    x = torch.randn(3, 64, 16, 16)
    torch.testing.assert_close(converted(x), expected_layer(x))
    converted.eval(), expected_layer.eval()
    torch.testing.assert_close(converted(x), expected_layer(x))


def test_pretrained_is_refused_clearly():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet18_cifar", pretrained=True)


def test_models_cli_lists_counts():
    from typer.testing import CliRunner

    from ndeconv.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in CIFAR_MODELS:
        assert name in result.output
    assert "paper (deconv)" in result.output  # the paper counted its deconvolved models


class _Fork(nn.Module):
    """A tensor that one branch's conv reads and the other branch's norm + in-place ReLU reads: with
    the norm removed, the ReLU would overwrite what the first branch's deconvolution saved."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.other = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        t = self.stem(x)
        return self.branch(t) + self.other(self.act(self.norm(t)))


@pytest.mark.parametrize("build", [_Fork, lambda: timm.create_model("dpn68", num_classes=5)], ids=["fork", "dpn68"])
def test_inplace_activations_after_removed_norms_do_not_break_backward(build):
    model = ndeconv.deconvolve(build())
    assert "act" in model.deconv_report.not_inplace or len(model.deconv_report.not_inplace) > 5
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
