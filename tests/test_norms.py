"""GroupNorm and no-norm conversions (``ndeconv.convert_norm``): the rules, their numbers against the
definitions in float64, and every zoo model converting, training a step and fusing."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm import layers as tl
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

import ndeconv
from ndeconv.models import CIFAR_MODELS
from ndeconv.norms import group_count


def _randomise_batch_norms(model: nn.Module) -> None:
    """Scales and shifts away from 1 and 0, so a rule that drops them is seen."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, _NormBase) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)


def _group_norm64(x: np.ndarray, groups: int, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """GroupNorm from its definition: each sample's channels in ``groups`` contiguous groups, each group
    standardised over its channels and positions, then the per-channel affine."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    out = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return out.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def test_group_count_is_the_largest_divisor_up_to_32():
    for channels in range(1, 300):
        g = group_count(channels)
        assert channels % g == 0 and g <= 32
        assert not any(channels % h == 0 for h in range(g + 1, min(32, channels) + 1))
    assert [group_count(c) for c in (64, 24, 48, 100, 3)] == [32, 24, 24, 25, 3]


def test_gn_replaces_every_batch_norm_keeping_eps_scale_and_shift():
    model = timm.create_model("resnet18_cifar", num_classes=10)
    _randomise_batch_norms(model)
    bns = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    ndeconv.convert_norm(model, "gn")
    modules = dict(model.named_modules())
    assert not any(isinstance(m, _NormBase) for m in model.modules())
    assert model.norm_report.counts() == {"BatchNorm2d -> GroupNorm": len(bns)}
    for name, bn in bns.items():
        gn = modules[name]
        groups = max(g for g in range(1, 33) if bn.num_features % g == 0)  # 32 for every width here
        assert type(gn) is nn.GroupNorm and (gn.num_groups, gn.eps) == (groups, bn.eps)
        torch.testing.assert_close((gn.weight, gn.bias), (bn.weight, bn.bias))
    gn = modules[next(iter(bns))].double()
    x = torch.randn(3, gn.num_channels, 5, 4, dtype=torch.float64) * 3 + 1
    expected = _group_norm64(x.numpy(), gn.num_groups, gn.weight.detach().numpy(), gn.bias.detach().numpy(), gn.eps)
    np.testing.assert_allclose(gn(x).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_timm_norm_act_becomes_group_norm_act_with_its_own_activation():
    model = timm.create_model("mobilenetv3_small_050", num_classes=5)
    _randomise_batch_norms(model)
    before = {name: (m.act, m.drop, m.weight.detach().clone())
              for name, m in model.named_modules() if isinstance(m, tl.BatchNormAct2d)}
    ndeconv.convert_norm(model, "gn")
    modules = dict(model.named_modules())
    for name, (act, drop, weight) in before.items():
        m = modules[name]
        assert type(m) is tl.GroupNormAct and m.act is act and m.drop is drop
        torch.testing.assert_close(m.weight.detach(), weight)
    name = next(n for n, (act, _, _) in before.items() if not isinstance(act, nn.Identity))
    layer = modules[name].double().train()
    x = torch.randn(2, layer.num_channels, 4, 4, dtype=torch.float64)
    normed = _group_norm64(x.numpy(), layer.num_groups, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                           layer.eps)
    torch.testing.assert_close(layer(x), before[name][0](torch.from_numpy(normed)), rtol=1e-10, atol=1e-10)


def test_none_removes_every_norm_and_gives_each_conv_the_zero_bias_of_its_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, bias=True), nn.BatchNorm2d(4))
    _randomise_batch_norms(model)
    with torch.no_grad():
        model[3].bias.uniform_(-1, 1)
    w1, w2, b2 = (t.detach().double().numpy() for t in (model[0].weight, model[3].weight, model[3].bias))
    ndeconv.convert_norm(model, "none")
    assert [type(m).__name__ for m in model] == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity"]
    assert torch.count_nonzero(model[0].bias) == 0 and model[0].bias.requires_grad
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    first = np.maximum(_conv64(x.numpy(), w1), 0)
    expected = _conv64(first, w2) + b2[None, :, None, None]
    np.testing.assert_allclose(model.double()(x).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def _conv64(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A valid cross-correlation from its definition (float64)."""
    n, _, h, wd = x.shape
    out, _, kh, kw = w.shape
    y = np.zeros((n, out, h - kh + 1, wd - kw + 1))
    for i in range(h - kh + 1):
        for j in range(wd - kw + 1):
            y[:, :, i, j] = np.einsum("nckl,ockl->no", x[:, :, i:i + kh, j:j + kw], w)
    return y


@pytest.mark.parametrize("norm", ["gn", "none"])
@pytest.mark.parametrize("name", [*CIFAR_MODELS, "airbench94"])
def test_every_zoo_model_converts_trains_a_step_and_fuses(name, norm):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).train()
    bns = sum(isinstance(m, _NormBase) for m in model.modules())
    ndeconv.convert_norm(model, norm)
    assert not any(isinstance(m, _NormBase) or "BatchNorm" in type(m).__name__ for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == (bns if norm == "gn" else 0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()
    fused = ndeconv.fuse(model)  # GroupNorm normalises each sample: nothing to fold, it stays
    assert sum(isinstance(m, nn.GroupNorm) for m in fused.modules()) == (bns if norm == "gn" else 0)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))


def test_a_norm_without_a_rule_is_named_and_rules_are_per_target():
    class MyNorm(nn.BatchNorm2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyNorm(4))
    with pytest.raises(ndeconv.UnsupportedLayerError, match=r"no GroupNorm rule for layer '1' of type .*MyNorm"):
        ndeconv.convert_norm(model, "gn")

    @ndeconv.register_rule(MyNorm, norm="gn")
    def my_norm_to_two_groups(module, ctx):
        return nn.GroupNorm(2, module.num_features)

    try:
        ndeconv.convert_norm(model, "gn")
        assert type(model[1]) is nn.GroupNorm and model[1].num_groups == 2
        assert "my_norm_to_two_groups" in ndeconv.list_rules("gn").values()
        assert "my_norm_to_two_groups" not in ndeconv.list_rules().values()  # deconvolution's rules unchanged
    finally:
        from ndeconv.rules import _RULES

        _RULES["gn"].pop(MyNorm)
    with pytest.raises(ValueError, match="norm must be one of deconv, gn, none, got 'ln'"):
        ndeconv.register_rule(MyNorm, norm="ln")
    with pytest.raises(ValueError, match="norm must be one of bn, gn, deconv, none, got 'ln'"):
        ndeconv.convert_norm(model, "ln")
