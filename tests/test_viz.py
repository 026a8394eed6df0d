"""`ndeconv viz`: the paper's pictures, and the deconvolution kernels they show."""

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ndeconv import viz
from ndeconv.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["kernels", "correlation", "sparsity", "linear"])
def test_viz_writes_png(kind, tmp_path):
    out = tmp_path / f"{kind}.png"
    result = runner.invoke(app, ["viz", kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_viz_kernels_of_a_trained_run(finished_tiny_run, tiny_recipe, tmp_path):
    result = runner.invoke(app, ["viz", "kernels", "--run", str(finished_tiny_run), "--out", str(tmp_path / "k.png")])
    assert result.exit_code == 0, result.output
    kernels = viz.run_kernels(finished_tiny_run)
    assert kernels.shape == (3, 3, 3, 3)
    trained = runner.invoke(app, ["train", str(tiny_recipe), "--norm", "bn", "--epochs", "1", "--out",
                                  str(tmp_path / "bn"), "-q"])
    assert trained.exit_code == 0, trained.output
    bn = runner.invoke(app, ["viz", "kernels", "--run", str(tmp_path / "bn"), "--out", str(tmp_path / "b.png")])
    assert bn.exit_code == 2 and "no deconvolution layer" in bn.output


def test_kernels_of_white_noise_are_deltas():
    noise = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kernels = viz.deconv_kernels(noise, k=5, stride=1)
    delta = torch.zeros(3, 3, 5, 5, dtype=torch.float64)
    for c in range(3):
        delta[c, c, 2, 2] = 1 / noise[:, c].std()
    torch.testing.assert_close(kernels, delta, atol=0.1 * float(delta.max()), rtol=0)


def test_kernels_of_correlated_input_are_centre_surround():
    noise = torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blur = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64) / 16
    smooth = F.conv2d(noise, blur.view(1, 1, 3, 3), padding=1)  # neighbours strongly correlated
    k = viz.deconv_kernels(smooth, k=5, stride=1)[0, 0]
    assert k[2, 2] > 0
    assert all(k[i, j] < 0 for i, j in ((1, 2), (3, 2), (2, 1), (2, 3)))
