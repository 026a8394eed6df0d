"""`ndeconv train` end to end through the CLI on a tiny parquet dataset the tests write."""

import json
import signal
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
from ndeconv.rundir import build_model, read_metrics
from runstate import default_interrupt
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
    assert {p.name for p in out.iterdir()} == {"config.yaml", "launch.json", "metrics.csv", "checkpoint.pth",
                                             "model.safetensors", "README.md", "results.json"}
    results = json.loads((out / "results.json").read_text())
    assert (results["model"], results["norm"], results["epochs"]) == ("convnet3", "deconv", 2)
    assert results["accuracy"] > 1.5 / CLASSES  # well above chance
    assert "accuracy (%)" in result.output and f"{100 * results['accuracy']:.2f}" in result.output  # as the docs
    rows = read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy", "seconds", "train_seconds"]
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


@pytest.mark.parametrize("norm, layer", [("gn", torch.nn.GroupNorm), ("none", torch.nn.Identity)])
def test_train_with_group_norm_or_no_norm(norm, layer, tiny_recipe, tmp_path):
    out = tmp_path / norm
    result = runner.invoke(app, ["train", str(tiny_recipe), "--norm", norm, "--epochs", "1", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["norm"] == norm and 0 <= results["accuracy"] <= 1
    model = build_model(parse_recipe(yaml.safe_load((out / "config.yaml").read_text())))
    load_model(model, out / "model.safetensors")  # the trained weights fit the rebuilt model
    assert any(isinstance(m, layer) for m in model.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, ndeconv.FastDeconv)) for m in model.modules())
    card = (out / "README.md").read_text()
    assert {"gn": "group normalisation", "none": "no normalisation"}[norm] in card


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "missing.yaml: recipe file not found"),
    (["{recipe}", "--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'"),
    (["{recipe}", "--set", "train.epochs=many"], "train.epochs must be a number or null, got 'many'"),
    (["{recipe}", "--data", "/nonexistent/dir"], "/nonexistent/dir does not exist"),
    (["{recipe}", "--set", "data.image_column=picture"], "has no column 'picture'"),
    (["{recipe}", "--model", "no_such_model"], "unknown timm model 'no_such_model'"),
    (["{recipe}", "--norm", "group"], "error: --norm: model.norm must be one of 'bn' | 'gn' | 'deconv' | 'none'"),
    (["{bad_key}"], "unknown key 'train.epoch'"),
    (["{bad_type}"], "optim.lr must be a number, got 'fast'"),
    (["{empty}"], "empty.yaml: the recipe is empty"),
    (["{recipe}", "--set", "optim.moment=0.5"], "unknown key 'optim.moment'; did you mean 'optim.momentum'?"),
    (["cifar10", "--epochs", "1"], "cannot load 'uoft-cs/cifar10'"),  # offline: the hub is unreachable
])
def test_bad_input_is_one_line_and_leaves_nothing(tiny_recipe, tiny_parquet, tmp_path, args, message):
    bad_key = write_tiny_recipe(tmp_path / "bad_key.yaml", tiny_parquet, train={"epoch": 2})
    bad_type = write_tiny_recipe(tmp_path / "bad_type.yaml", tiny_parquet, optim={"lr": "fast"})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    args = [a.format(recipe=tiny_recipe, bad_key=bad_key, bad_type=bad_type, empty=empty) for a in args]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *args, "--out", str(out), "-q"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_every_problem_of_a_recipe_is_reported_at_once(tiny_parquet, tmp_path):
    bad = write_tiny_recipe(tmp_path / "bad.yaml", tiny_parquet, train={"epoch": 2, "batch_size": "big"},
                            optim={"lrr": 0.1}, data={"cahce": True})
    result = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    for problem in ("unknown key 'train.epoch'; did you mean 'train.epochs'?", "train.batch_size must be an integer",
                    "unknown key 'optim.lrr'; did you mean 'optim.lr'?",
                    "unknown key 'data.cahce'; did you mean 'data.cache'?"):
        assert problem in line


@pytest.mark.parametrize("command", [
    ["train", "{recipe}", "--out", "{file}"],
    ["train", "{recipe}", "--out", "/proc/ndeconv-run"],
    ["viz", "kernels", "--out", "/proc/ndeconv.png"],
    ["viz", "kernels", "--out", "{tmp}"],
    ["export", "{tmp}", "--out", "/proc/ndeconv.onnx"],
])
def test_unwritable_outputs_are_refused_before_any_work(command, tiny_recipe, tmp_path):
    file = tmp_path / "afile"
    file.write_text("")
    args = [a.format(recipe=tiny_recipe, file=file, tmp=tmp_path) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and args[-1] in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "tiny.yaml"]


def test_resume_refuses_flags_it_would_ignore(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(tiny_recipe), "--epochs", "1", "--out", str(out), "-q"]).exit_code == 0
    before = (out / "metrics.csv").read_text()
    result = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "3", "--lr", "0.2"])
    assert result.exit_code == 2 and "drop --epochs, --lr" in result.output
    assert (out / "metrics.csv").read_text() == before


@pytest.mark.parametrize("n", ["0", "-2"])
def test_num_processes_must_be_positive(n, tiny_recipe, tmp_path):
    result = runner.invoke(app, ["train", str(tiny_recipe), "--num-processes", n, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--num-processes" in result.output and not (tmp_path / "r").exists()


def test_every_option_that_sets_a_recipe_key_is_an_option_of_train():
    """The table of options the errors map back to (``FLAG_KEYS``) and the options ``ndeconv train``
    takes cannot drift apart; ``--version`` is the installed distribution's."""
    from importlib.metadata import version

    import typer.main

    from ndeconv.cli.common import FLAG_KEYS

    assert runner.invoke(app, ["--version"]).output.strip() == f"ndeconv {version('ndeconv')}"
    train = typer.main.get_command(app).commands["train"]
    options = {name for p in train.params for name in p.opts if name.startswith("--")}
    assert set(FLAG_KEYS) <= options


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


@pytest.mark.slow
def test_imagenet_style_run_from_a_jpeg_folder_uncached(tmp_path):
    """The imagenet recipe's path: an image folder of JPEG files, decoded per item, random-resized crops."""
    from PIL import Image

    from tinydata import tiny_arrays, tiny_recipe_dict

    for split, n, seed in (("train", 96, 0), ("test", 32, 1)):
        images, labels = tiny_arrays(n, seed)
        for i, (a, k) in enumerate(zip(images, labels)):
            folder = tmp_path / "jpeg" / split / f"n0{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).resize((24, 24)).save(folder / f"{i}.JPEG", quality=90)
    raw = tiny_recipe_dict(tmp_path / "jpeg")
    raw["data"].update(resize=20, cache=False, image_column="image")
    raw["augment"] = {"random_resized_crop": True, "scale": [0.35, 1.0], "flip": True}
    raw["train"].update(epochs=2, num_workers=2, batch_size=16)
    recipe = tmp_path / "imagenet_style.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(recipe), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2 and results["train_images"] == 96
    assert results["steps"] == 2 * (96 // 16)  # whole batches only: the training loader drops the last
    model = build_model(parse_recipe(yaml.safe_load((out / "config.yaml").read_text())))
    load_model(model, str(out / "model.safetensors"))
    dls = make_dataloaders(parse_recipe(yaml.safe_load((out / "config.yaml").read_text())), device="cpu")
    assert type(dls.valid.dataset).__name__ == "DecodedImages"  # decoded per item, not cached
    assert _accuracy(model, dls) == pytest.approx(results["accuracy"])
    assert results["accuracy"] > 0.5


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.45, 0.6, 1.5, 4.0])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(delay, tmp_path):
    """While torch imports, while data and model load, or in the first epoch: one line, exit 130."""
    import shutil
    import time

    script = shutil.which("ndeconv")
    assert script, "the ndeconv console script is installed"
    proc = subprocess.Popen([script, "train", "--out", str(tmp_path / "run"), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_interrupt)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    (line,) = stderr.strip().splitlines()
    assert line.startswith("interrupted") and "Traceback" not in stderr


@pytest.mark.parametrize("inherited", [signal.SIG_IGN, signal.default_int_handler], ids=["ignored", "default"])
def test_console_script_keeps_an_ignored_interrupt(inherited, monkeypatch):
    """Started with Ctrl-C ignored (a background job of a script), the ``ndeconv`` script keeps
    ignoring it, as ``python -m ndeconv`` does; started normally, the command runs with Ctrl-C as
    ``KeyboardInterrupt`` (which stops a run at an epoch boundary), not the start-up's hard exit."""
    import _ndeconv_entry
    import ndeconv.cli
    from ndeconv.cli.common import complete_package

    seen = []

    def command() -> None:  # what a command sees once it has completed the package
        complete_package()
        seen.append(signal.getsignal(signal.SIGINT))

    monkeypatch.setattr(ndeconv.cli, "main", command)
    previous = signal.signal(signal.SIGINT, inherited)
    try:
        _ndeconv_entry.main()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [inherited]
