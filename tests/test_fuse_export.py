"""Deploy: fused models compute the eval function with plain layers; export to ONNX / TorchScript / safetensors."""

import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors import safe_open
from torch import nn
from typer.testing import CliRunner

import ndeconv
from ndeconv.cli import app
from ndeconv.models import CIFAR_MODELS

runner = CliRunner()
BN_TYPES = (nn.BatchNorm2d, nn.BatchNorm1d)


def _warm(model, x, steps=3):
    """A few training-mode forwards so the running estimates are not the identity."""
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(x * (1 + 0.1 * i) + 0.2)
    return model.eval()


def _bn_free_param_count(name, **kwargs):
    """Parameters of the same architecture with its BNs removed and a bias on every conv that is not
    depthwise (depthwise convs are kept as they are; built independently)."""
    model = timm.create_model(name, **kwargs)
    count = 0
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            continue
        count += sum(p.numel() for p in module.parameters(recurse=False))
        depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1
        if isinstance(module, nn.Conv2d) and module.bias is None and not depthwise:
            count += module.out_channels
    return count


def _check_fused(name, size, **kwargs):
    model = ndeconv.deconvolve(timm.create_model(name, **kwargs))
    x = torch.randn(4, 3, size, size)
    _warm(model, x)
    fused = ndeconv.fuse(model)
    assert model.training is False and isinstance(model.get_classifier(), ndeconv.Delinear)  # the original is kept
    leftover = [type(m).__name__ for m in fused.modules()
                if type(m).__module__.startswith("ndeconv.") and not type(m).__module__.startswith("ndeconv.models")]
    assert not leftover
    assert not any(hasattr(m, "running_deconv") for m in fused.modules())
    with torch.no_grad():
        expected, got = model(x), fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert sum(p.numel() for p in fused.parameters()) == _bn_free_param_count(name, **kwargs)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_fused_cifar_models_match_eval_output(name):
    _check_fused(name, 32, num_classes=10)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "regnetx_002", "densenet121"])
def test_fused_timm_models_match_eval_output(name):
    _check_fused(name, 64, num_classes=7)


def test_channel_deconv_fuses_to_an_affine_map():
    for shape in ((16, 10, 3, 3), (16, 10)):
        layer = ndeconv.ChannelDeconv(10, block=4)
        x = torch.randn(*shape) * torch.linspace(0.5, 3, 10).view(1, 10, *([1] * (len(shape) - 2))) + 1
        layer(x)
        layer(x * 0.5)
        layer.eval()
        fused = ndeconv.fuse(nn.Sequential(layer))
        assert isinstance(fused[0], nn.Conv2d if len(shape) == 4 else nn.Linear)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), layer(x), rtol=1e-5, atol=1e-5)


def test_channel_deconv_reloaded_from_its_state_dict_fuses_as_the_one_it_trained(tmp_path):
    from safetensors.torch import load_model, save_model

    trained = nn.Sequential(ndeconv.ChannelDeconv(10, block=4))
    x = torch.randn(16, 10) * torch.linspace(0.5, 3, 10) + 1
    trained(x)
    save_model(trained, tmp_path / "layer.safetensors")
    reloaded = nn.Sequential(ndeconv.ChannelDeconv(10, block=4))
    load_model(reloaded, tmp_path / "layer.safetensors")
    fused = ndeconv.fuse(reloaded)
    assert isinstance(fused[0], nn.Linear)  # trained on (N, C): a Linear, not a 1x1 conv
    with torch.no_grad():
        torch.testing.assert_close(fused(x), trained.eval()(x), rtol=1e-5, atol=1e-5)


def test_untrained_model_fuses_to_its_conv_weights_plus_biases():
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10)).eval()
    fused = ndeconv.fuse(model)
    first, original = fused.features[0].conv, model.features[0].conv
    torch.testing.assert_close(first.weight, original.weight)  # identity whitening, zero mean
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)


def test_fused_timm_model_loads_without_ndeconv(tmp_path):
    model = _warm(ndeconv.deconvolve(timm.create_model("resnet18", num_classes=5)), torch.randn(4, 3, 64, 64))
    fused = ndeconv.fuse(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = fused(x)
    torch.save({"model": fused, "x": x, "y": expected}, tmp_path / "fused.pt")
    script = (
        "import sys; sys.modules['ndeconv'] = None\n"  # any import of ndeconv now fails
        "import torch\n"
        f"d = torch.load({str(tmp_path / 'fused.pt')!r}, weights_only=False)\n"
        "with torch.no_grad(): y = d['model'](d['x'])\n"
        "assert torch.allclose(y, d['y'], rtol=1e-5, atol=1e-6), (y - d['y']).abs().max()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.fixture()
def trained_run(finished_tiny_run):
    return finished_tiny_run


def test_export_onnx_matches_pytorch_in_onnxruntime(trained_run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from ndeconv.rundir import load_run_model

    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(trained_run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, _ = load_run_model(trained_run)
    x = torch.randn(5, 3, 16, 16)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)


def test_export_torchscript_and_safetensors(trained_run, tmp_path):
    from ndeconv.rundir import load_run_model

    model, _ = load_run_model(trained_run)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    assert runner.invoke(app, ["export", str(trained_run), "-f", "torchscript", "--out",
                               str(tmp_path / "m.pt")]).exit_code == 0
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
    result = runner.invoke(app, ["export", str(trained_run), "-f", "safetensors"])
    assert result.exit_code == 0, result.output
    path = trained_run / "model.fused.safetensors"
    with safe_open(str(path), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["model"] == "convnet3" and json.loads(meta["mean"]) == [0.3, 0.3, 0.3]
    fused = ndeconv.fuse(model)
    assert keys == set(fused.state_dict())
    assert not any("running" in k for k in keys)


def test_export_errors_are_one_line(tmp_path, trained_run):
    missing = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    partial = runner.invoke(app, ["export", str(tmp_path / "partial")])
    assert partial.exit_code == 2 and "incomplete run, no model.safetensors" in partial.output
    assert len(partial.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["export", str(trained_run), "--format", "tflite"])
    assert bad.exit_code == 2 and "choose one of onnx, torchscript, safetensors" in bad.output


def test_scale_settings_fuse_and_export_to_onnx(tmp_path):
    """A model with scale-invariant layers fuses to plain torch layers, and its ONNX file computes the
    eval function in onnxruntime."""
    pytest.importorskip("onnxruntime")
    from ndeconv.export import check_onnx, export_model
    from ndeconv.recipe import load_recipe

    recipe = load_recipe("digits", {"model.deconv.scale": "channel", "model.deconv.update_every": "2"})
    torch.manual_seed(0)
    model = ndeconv.deconvolve(timm.create_model("convnet3", num_classes=10, in_chans=1), recipe.model.deconv)
    _warm(model, torch.randn(8, 1, 8, 8))
    fused = ndeconv.fuse(model)
    assert not [m for m in fused.modules() if type(m).__module__.startswith("ndeconv.layers")]
    path = export_model(model, recipe, "onnx", tmp_path / "model.onnx")
    assert check_onnx(path, model, recipe) < 1e-4
