"""Scale-invariant reuse (``scale``), the cheap normalisation between whitened convs (``whiten=False``,
``whiten_every``) and warm-started Newton-Schulz (``warm_start``), against the float64 reference."""

import copy

import numpy as np
import pytest
import timm
import torch
from torch import nn

import ndeconv
from ndeconv import functional as DF
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe

import reference

GEOMETRIES = {
    "plain": dict(cin=6, cout=5, groups=1, block=3, s=2, hw=(6, 5)),  # f = 27, two column groups
    "grouped": dict(cin=8, cout=6, groups=2, block=64, s=2, hw=(5, 5)),  # one block per conv group
}


def _layer(g, **settings):
    torch.manual_seed(0)
    layer = ndeconv.FastDeconv(g["cin"], g["cout"], 3, padding=1, groups=g["groups"], block=g["block"],
                               sampling_stride=g["s"], n_iter=5, dtype=torch.float64, **settings)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    return layer


def _x(g, seed):
    gen = torch.Generator().manual_seed(seed)
    spread = torch.linspace(0.3, 3.0, g["cin"], dtype=torch.float64).view(1, -1, 1, 1)
    return (torch.randn(3, g["cin"], *g["hw"], generator=gen, dtype=torch.float64) + 0.7) * spread


def _standardize(x, scale, running=None):
    """The input as a layer with ``scale`` whitens it; ``running = (mean, var)``: eval's channel moments."""
    x = np.asarray(x, dtype=np.float64)
    if scale == "sample":
        return reference.standardize_per_sample(x)
    if scale == "channel" and running is not None:
        mean, var = (np.asarray(v, dtype=np.float64).reshape(1, -1, 1, 1) for v in running)
        return (x - mean) / np.sqrt(var + 1e-5)
    return reference.standardize_per_channel(x) if scale == "channel" else x


def _ref(g, layer, x, scale, stats=None, running=None, **kw):
    """The reference output of ``layer`` on ``x`` (the batch's channel moments unless ``running``)."""
    return reference.fast_deconv(_standardize(x, scale, running), layer.weight.detach().numpy(),
                                 layer.bias.detach().numpy(), padding=(1, 1), groups=g["groups"], block=g["block"],
                                 sampling_stride=g["s"], n_iter=5, stats=stats, **kw)


def _running(layer, prefix="running"):
    """The running estimates, or (``prefix="last"``) the last update's, per conv group."""
    mean, deconv = getattr(layer, f"{prefix}_mean"), getattr(layer, f"{prefix}_deconv")
    return [(mean[i].numpy().copy(), deconv[i].numpy().copy()) for i in range(mean.shape[0])]


@pytest.mark.parametrize("scale", ["sample", "channel"])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_an_update_step_whitens_the_standardised_input(name, scale):
    g = GEOMETRIES[name]
    layer, x = _layer(g, scale=scale), _x(g, 0)
    out = layer(x).detach().numpy()
    ref, stats = _ref(g, layer, x.numpy(), scale)
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    for (mu, deconv), (run_mu, run_deconv) in zip(stats, _running(layer)):
        np.testing.assert_allclose(run_mu, 0.1 * mu, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(run_deconv, 0.1 * deconv + 0.9 * np.eye(len(deconv)), rtol=1e-7, atol=1e-10)
    if scale == "channel":  # BatchNorm's running statistics: the unbiased variance
        axes, x64 = (0, 2, 3), x.numpy()
        np.testing.assert_allclose(layer.running_input_mean.numpy(), 0.1 * x64.mean(axes), rtol=1e-10)
        np.testing.assert_allclose(layer.running_input_var.numpy(), 0.9 + 0.1 * x64.var(axes, ddof=1), rtol=1e-10)


@pytest.mark.parametrize("scale", ["sample", "channel"])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_a_reuse_step_whitens_with_the_last_d_and_fresh_standardisation(name, scale):
    g = GEOMETRIES[name]
    layer = _layer(g, scale=scale, update_every=2)
    layer(_x(g, 0))
    stats, x = _running(layer, "last"), _x(g, 1)
    with torch.no_grad():
        out = layer(x).numpy()
    ref, _ = _ref(g, layer, x.numpy(), scale, stats=stats)
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("scale", ["none", "sample", "channel"])
def test_reuse_steps_are_invariant_to_the_input_scale_only_with_a_scale_setting(scale):
    """What makes ``update_every > 1`` train at the paper's rate: on a step that reuses D, an input
    scaled per channel (a layer before it that grew) gives the same output."""
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale=scale, update_every=4)
    layer(_x(g, 0))
    x = _x(g, 1)
    factor = 1.0 if scale == "sample" else torch.linspace(2, 9, g["cin"], dtype=torch.float64).view(1, -1, 1, 1)
    outs = []
    for inp in (x, x * 7 * factor):
        with torch.no_grad():
            outs.append(copy.deepcopy(layer)(inp))
    if scale == "none":
        assert not torch.allclose(outs[0], outs[1], rtol=1e-2)
    else:
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-4)  # up to eps in sqrt(var + eps)


@pytest.mark.parametrize("step", ["update", "reuse"])
@pytest.mark.parametrize("scale", ["sample", "channel"])
def test_gradients_flow_through_the_fresh_standardisation(scale, step):
    """Input and weight gradients against central differences of the reference: on a reuse step D and
    its mean are constants and the fresh standardisation carries the input's gradient."""
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale=scale, update_every=2)
    if step == "reuse":
        layer(_x(g, 0))
    stats = _running(layer, "last") if step == "reuse" else None
    gen = torch.Generator().manual_seed(5)
    x = _x(g, 1).requires_grad_()
    y = layer(x)
    grad_out = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(grad_out)
    w, h = layer.weight.detach().numpy(), 1e-5
    for name, grad, point in (("input", x.grad, x.detach().numpy()), ("weight", layer.weight.grad, w)):
        direction = torch.randn(point.shape, dtype=torch.float64, generator=gen).numpy()

        def value(t):
            moved = point + t * direction
            probe = copy.copy(layer)
            if name == "weight":
                probe.weight = nn.Parameter(torch.from_numpy(moved))
            out, _ = _ref(g, probe, moved if name == "input" else x.detach().numpy(), scale, stats=stats)
            return float((out * grad_out.numpy()).sum())

        expected = (value(h) - value(-h)) / (2 * h)
        assert float((grad.numpy() * direction).sum()) == pytest.approx(expected, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("scale", ["sample", "channel"])
def test_eval_uses_the_running_estimates_and_fuses_to_plain_torch_layers(scale):
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale=scale, update_every=2)
    for seed in range(3):
        layer(_x(g, seed))
    layer.eval()
    x = _x(g, 9)
    with torch.no_grad():
        out = layer(x)
    running = (layer.running_input_mean.numpy(), layer.running_input_var.numpy()) if scale == "channel" else None
    ref, _ = _ref(g, layer, x.numpy(), scale, stats=_running(layer), running=running)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    fused = layer.fused()
    assert [type(m) for m in fused] == [nn.GroupNorm if scale == "sample" else nn.BatchNorm2d, nn.Conv2d]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), out, rtol=1e-10, atol=1e-10)


def test_a_conv_that_does_not_whiten_only_standardises_its_channels(monkeypatch):
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale="channel", whiten=False)
    monkeypatch.setattr(DF, "conv_patch_samples", lambda *a, **k: pytest.fail("a standardising conv gathered patches"))
    x = _x(g, 2)
    out = layer(x).detach().numpy()
    ref, _ = _ref(g, layer, x.numpy(), "channel", whiten=False)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-10 * np.abs(ref).max())
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="whiten=False needs scale='channel'"):
        ndeconv.FastDeconv(4, 4, 3, whiten=False)


@pytest.mark.parametrize("scale", ["sample", "channel"])
def test_delinear_standardises_its_features(scale):
    torch.manual_seed(0)
    layer = ndeconv.Delinear(12, 5, block=4, scale=scale, dtype=torch.float64)
    x = torch.randn(16, 12, dtype=torch.float64) * torch.linspace(0.5, 4, 12, dtype=torch.float64) + 1.0
    standardize = reference.standardize_per_sample if scale == "sample" else reference.standardize_per_channel
    ref = reference.delinear(standardize(x.numpy()), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                             block=4)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-7, atol=1e-9)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x), rtol=1e-10, atol=1e-10)


def test_warm_start_continues_from_the_layers_own_last_d():
    g = GEOMETRIES["grouped"]
    layer = _layer(g, warm_start=2)
    first = _x(g, 0)
    out0 = layer(first).detach().numpy()  # nothing to start from yet: the cold iteration
    np.testing.assert_allclose(out0, _ref(g, layer, first.numpy(), "none")[0], rtol=1e-7, atol=1e-9)
    inits, x = [d for _, d in _running(layer, "last")], _x(g, 1).requires_grad_()
    y = layer(x)
    out = y.detach().numpy()
    ref, stats = _ref(g, layer, x.detach().numpy(), "none", warm=(inits, 2))
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    y.sum().backward()  # the step's own D survives the update of the buffer it started from
    cold, _ = _ref(g, layer, x.detach().numpy(), "none")
    assert not np.allclose(out, cold, rtol=1e-3)  # a different whitening matrix than the cold start's


def test_warm_start_from_a_near_whitening_gets_closer_than_a_cold_start():
    """From the whitening of a covariance 1% off on its diagonal, every step brings ``D Cov D^T`` closer
    to the identity, and two steps are far closer than two steps from the identity."""
    torch.manual_seed(0)
    a = torch.randn(300, 20, dtype=torch.float64) @ torch.randn(20, 20, dtype=torch.float64)
    cov = (a.T @ a / 300).unsqueeze(0)
    init = DF.isqrt_newton_schulz(cov + 0.01 * torch.diag_embed(cov.diagonal(dim1=1, dim2=2)), 60)
    eye = torch.eye(20, dtype=torch.float64)

    def error(d):
        return float(torch.linalg.matrix_norm(d[0] @ cov[0] @ d[0].T - eye))

    warm = [error(DF.isqrt_newton_schulz_warm(cov, init, n)) for n in (1, 2, 3)]
    assert warm[0] > warm[1] > warm[2]
    assert warm[1] < error(DF.isqrt_newton_schulz(cov, 2)) / 4
    np.testing.assert_allclose(DF.isqrt_newton_schulz_warm(cov, init, 2)[0].numpy(),
                               reference.newton_schulz_warm(cov[0].numpy(), init[0].numpy(), 2), rtol=1e-10, atol=1e-12)


def test_deconvolve_whitens_the_stem_the_classifier_and_every_nth_conv():
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), scale="channel", whiten_every=3,
                               block=16)
    convs = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)]
    assert [m.whiten for m in convs] == [i % 3 == 0 for i in range(len(convs))] and len(convs) == 8
    assert {m.scale for m in convs} == {"channel"} and convs[0].n_iter == 15  # the stem keeps its settings
    head = model.get_classifier()
    assert isinstance(head, ndeconv.Delinear) and head.scale == "channel" and head.whiten
    recipe = load_recipe("digits", {"model.deconv.scale": "sample", "model.deconv.whiten_every": "2",
                                    "model.deconv.warm_start": "1"})
    assert (recipe.model.deconv.scale, recipe.model.deconv.whiten_every, recipe.model.deconv.warm_start) == \
        ("sample", 2, 1)
    with pytest.raises(RecipeError, match="whiten_every > 1 needs model.deconv.scale"):
        load_recipe("digits", {"model.deconv.whiten_every": "2"})
    with pytest.raises(RecipeError, match="model.deconv.scale must be one of"):
        load_recipe("digits", {"model.deconv.scale": "batch"})

