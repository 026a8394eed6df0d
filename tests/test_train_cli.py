"""`ndeconv train` end to end through the CLI on a tiny parquet dataset the tests write."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_model
from typer.testing import CliRunner

import ndeconv
from ndeconv.cli import app
from ndeconv.data import make_dataloaders
from ndeconv.recipe import parse_recipe
from ndeconv.train import build_model, read_metrics
from tinydata import CLASSES, write_tiny_recipe

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _accuracy(model, dls):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for xb, yb in dls.valid:
            correct += int((model(xb).argmax(1) == yb).sum())
            total += len(yb)
    return correct / total


def test_train_writes_a_complete_run_directory(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_recipe), "--out", str(out), "--quiet", "--set", "train.seed=3"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.csv", "checkpoint.pth", "model.safetensors",
                                             "results.json"}
    results = json.loads((out / "results.json").read_text())
    assert (results["model"], results["norm"], results["epochs"]) == ("convnet3", "deconv", 2)
    assert results["accuracy"] > 1.5 / CLASSES  # well above chance
    rows = read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy", "seconds"]
    assert rows[-1]["accuracy"] == pytest.approx(results["accuracy"])
    assert results["seconds"] == pytest.approx(sum(r["seconds"] for r in rows), abs=0.01)

    recipe = parse_recipe(yaml.safe_load((out / "config.yaml").read_text()))
    assert recipe.train.seed == 3  # the resolved recipe, override included
    model = build_model(recipe)
    assert sum(isinstance(m, ndeconv.FastDeconv) for m in model.modules()) == 3
    load_model(model, out / "model.safetensors")
    assert _accuracy(model, make_dataloaders(recipe, device="cpu")) == pytest.approx(results["accuracy"])
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


def test_train_bn_baseline_has_no_deconvolution(tiny_recipe, tmp_path):
    out = tmp_path / "bn"
    result = runner.invoke(app, ["train", str(tiny_recipe), "--norm", "bn", "--epochs", "1", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert (results["norm"], results["epochs"]) == ("bn", 1)
    model = build_model(parse_recipe(yaml.safe_load((out / "config.yaml").read_text())))
    assert not any(isinstance(m, ndeconv.FastDeconv) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "missing.yaml: recipe file not found"),
    (["{recipe}", "--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'"),
    (["{recipe}", "--set", "train.epochs=many"], "train.epochs must be an integer, got 'many'"),
    (["{recipe}", "--data", "/nonexistent/dir"], "/nonexistent/dir does not exist"),
    (["{recipe}", "--set", "data.image_column=picture"], "has no column 'picture'"),
    (["{recipe}", "--model", "no_such_model"], "unknown timm model 'no_such_model'"),
    (["{recipe}", "--norm", "group"], "model.norm must be one of 'bn' | 'deconv'"),
    (["{bad_key}"], "unknown key 'train.epoch'"),
    (["{bad_type}"], "optim.lr must be a number, got 'fast'"),
    (["cifar10", "--epochs", "1"], "cannot load 'uoft-cs/cifar10'"),  # offline: the hub is unreachable
])
def test_bad_input_is_one_line_and_leaves_nothing(tiny_recipe, tiny_parquet, tmp_path, args, message):
    bad_key = write_tiny_recipe(tmp_path / "bad_key.yaml", tiny_parquet, train={"epoch": 2})
    bad_type = write_tiny_recipe(tmp_path / "bad_type.yaml", tiny_parquet, optim={"lr": "fast"})
    args = [a.format(recipe=tiny_recipe, bad_key=bad_key, bad_type=bad_type) for a in args]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *args, "--out", str(out), "-q"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_existing_run_directory_is_not_overwritten(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["train", str(tiny_recipe), "--out", str(out), "-q"])
    assert result.exit_code == 2 and "already exists" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_top_level_cli_and_module_run_the_same_app(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", str(tiny_recipe), "--epochs", "1",
                           "--out", str(out), "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    listed = subprocess.run([sys.executable, "-m", "ndeconv", "recipes"], capture_output=True, text=True)
    assert listed.returncode == 0 and "cifar10" in listed.stdout and "digits" in listed.stdout
