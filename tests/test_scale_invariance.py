"""Scale-invariant reuse (``scale: channel``) against the float64 reference, and the settings removed
in 0.2.0 (a run directory that lists them at their kept values still loads)."""

import copy

import numpy as np
import pytest
import timm
import torch
from torch import nn

import ndeconv
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


@pytest.mark.parametrize("scale", ["channel"])
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
        np.testing.assert_allclose(layer.input_norm.running_mean.numpy(), 0.1 * x64.mean(axes), rtol=1e-10)
        np.testing.assert_allclose(layer.input_norm.running_var.numpy(), 0.9 + 0.1 * x64.var(axes, ddof=1), rtol=1e-10)


@pytest.mark.parametrize("scale", ["channel"])
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


@pytest.mark.parametrize("scale", ["none", "channel"])
def test_reuse_steps_are_invariant_to_the_input_scale_only_with_a_scale_setting(scale):
    """What makes ``update_every > 1`` train at the paper's rate: on a step that reuses D, an input
    scaled per channel (a layer before it that grew) gives the same output."""
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale=scale, update_every=4)
    layer(_x(g, 0))
    x = _x(g, 1)
    factor = torch.linspace(2, 9, g["cin"], dtype=torch.float64).view(1, -1, 1, 1)
    outs = []
    for inp in (x, x * 7 * factor):
        with torch.no_grad():
            outs.append(copy.deepcopy(layer)(inp))
    if scale == "none":
        assert not torch.allclose(outs[0], outs[1], rtol=1e-2)
    else:
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-4)  # up to eps in sqrt(var + eps)


@pytest.mark.parametrize("step", ["update", "reuse"])
@pytest.mark.parametrize("scale", ["channel"])
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


@pytest.mark.parametrize("scale", ["channel"])
def test_eval_uses_the_running_estimates_and_fuses_to_plain_torch_layers(scale):
    g = GEOMETRIES["plain"]
    layer = _layer(g, scale=scale, update_every=2)
    for seed in range(3):
        layer(_x(g, seed))
    layer.eval()
    x = _x(g, 9)
    with torch.no_grad():
        out = layer(x)
    running = (layer.input_norm.running_mean.numpy(), layer.input_norm.running_var.numpy()) if scale == "channel" else None
    ref, _ = _ref(g, layer, x.numpy(), scale, stats=_running(layer), running=running)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    fused = layer.fused()
    assert [type(m) for m in fused] == [nn.BatchNorm2d, nn.Conv2d]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), out, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", ["channel"])
def test_delinear_standardises_its_features(scale):
    torch.manual_seed(0)
    layer = ndeconv.Delinear(12, 5, block=4, scale=scale, dtype=torch.float64)
    x = torch.randn(16, 12, dtype=torch.float64) * torch.linspace(0.5, 4, 12, dtype=torch.float64) + 1.0
    ref = reference.delinear(reference.standardize_per_channel(x.numpy()), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                             block=4)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-7, atol=1e-9)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x), rtol=1e-10, atol=1e-10)


def test_removed_settings_load_at_their_kept_values_and_are_refused_otherwise(finished_tiny_run, tmp_path):
    import shutil

    import yaml

    from ndeconv.rundir import load_run_recipe

    model = ndeconv.deconvolve(timm.create_model("mobilenetv2_050", num_classes=10), scale="channel", block=16)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert depthwise and not any(isinstance(m, ndeconv.FastDeconv) for m in depthwise)  # kept plain
    old = tmp_path / "old-run"
    shutil.copytree(finished_tiny_run, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["model"]["deconv"].update(whiten_every=1, warm_start=0, whiten_depthwise=False)  # as 0.1 wrote it
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert load_run_recipe(old) == load_run_recipe(finished_tiny_run)
    config["model"]["deconv"]["warm_start"] = 1
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RecipeError, match=r"model.deconv.warm_start was removed in ndeconv 0.2.0.*got 1"):
        load_run_recipe(old)
    for key in ("whiten_every", "warm_start", "whiten_depthwise"):
        with pytest.raises(RecipeError, match=f"model.deconv.{key} was removed in ndeconv 0.2.0"):
            load_recipe("digits", {f"model.deconv.{key}": "2"})
        with pytest.raises(TypeError, match=f"unknown setting '{key}'"):
            ndeconv.DeconvConfig(**{key: 2})
    for scale in ("sample", "batch"):
        with pytest.raises(RecipeError, match="model.deconv.scale must be one of 'none' | 'channel'"):
            load_recipe("digits", {"model.deconv.scale": scale})

