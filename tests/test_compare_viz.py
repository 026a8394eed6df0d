"""`ndeconv compare` (Table 1 layout, reuse/resume) and `ndeconv viz` (the paper's pictures)."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ndeconv import viz
from ndeconv.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, tiny_parquet):
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("compare")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet)
    out = root / "out"
    args = ["compare", str(recipe), "--models", "convnet3", "--epochs", "1,2", "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, args


def test_compare_writes_the_table_in_the_papers_layout(comparison):
    out, _ = comparison
    assert sorted(p.name for p in out.iterdir()) == [
        "convnet3-bn-1ep", "convnet3-bn-2ep", "convnet3-deconv-1ep", "convnet3-deconv-2ep",
        "curves.png", "table.csv", "table.md"]
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["model"] == "convnet3"
    assert list(rows[0])[:6] == ["model", "params_M", "BN_1ep", "ND_1ep", "BN_2ep", "ND_2ep"]
    for norm, label in (("bn", "BN"), ("deconv", "ND")):
        for epochs in (1, 2):
            results = json.loads((out / f"convnet3-{norm}-{epochs}ep" / "results.json").read_text())
            assert results["epochs"] == epochs
            assert float(rows[0][f"{label}_{epochs}ep"]) == pytest.approx(100 * results["accuracy"], abs=0.006)
    deconv = json.loads((out / "convnet3-deconv-2ep" / "results.json").read_text())
    assert float(rows[0]["params_M"]) == pytest.approx(deconv["params"] / 1e6, abs=0.006)
    table = (out / "table.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| model"))
    assert header == "| model (params) | BN 1 ep | ND 1 ep | BN 2 ep | ND 2 ep |"
    assert (out / "curves.png").read_bytes().startswith(PNG)


def test_compare_reuses_finished_runs_and_resumes_interrupted_ones(comparison):
    out, args = comparison
    finished = out / "convnet3-bn-2ep" / "results.json"
    before = finished.stat().st_mtime_ns
    interrupted = out / "convnet3-deconv-1ep"
    (interrupted / "results.json").unlink()
    (interrupted / "model.safetensors").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert finished.stat().st_mtime_ns == before  # not trained again
    assert (interrupted / "results.json").is_file()  # resumed from its checkpoint and finished


def test_compare_refuses_a_directory_with_other_settings(comparison, tiny_parquet, tmp_path):
    out, args = comparison
    changed = args + ["--set", "optim.lr=0.01"]
    result = runner.invoke(app, changed)
    assert result.exit_code == 2 and "holds a run with different settings" in result.output


@pytest.mark.parametrize("kind", ["kernels", "correlation", "sparsity", "linear"])
def test_viz_writes_png(kind, tmp_path):
    out = tmp_path / f"{kind}.png"
    result = runner.invoke(app, ["viz", kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_viz_kernels_of_a_trained_run(comparison, tmp_path):
    out, _ = comparison
    result = runner.invoke(app, ["viz", "kernels", "--run", str(out / "convnet3-deconv-2ep"), "--out",
                                 str(tmp_path / "k.png")])
    assert result.exit_code == 0, result.output
    kernels = viz.run_kernels(out / "convnet3-deconv-2ep")
    assert kernels.shape == (3, 3, 3, 3)
    bn = runner.invoke(app, ["viz", "kernels", "--run", str(out / "convnet3-bn-1ep"), "--out", str(tmp_path / "b.png")])
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
