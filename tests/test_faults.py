"""Faults and hostile input: planted pickles, damaged checkpoints, numbers as people write them,
non-finite values, divergence as a result."""

import json
import pickle
import shutil

import pytest
import torch
from fastai.callback.core import Callback
from typer.testing import CliRunner

from ndeconv.cli import app
from ndeconv.compare.grid import _run_one
from ndeconv.errors import DivergedError, RecipeError, RunDirError
from ndeconv.recipe import apply_override, load_recipe
from ndeconv.rundir import load_run_recipe
from ndeconv.train import resume, train
from ndeconv.train.checkpoint import read_checkpoint
from tinydata import write_tiny_recipe

runner = CliRunner()


class _Planted:
    """Unpickling this runs ``open(marker, 'w')``: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _interrupted_copy(finished, tmp_path):
    """A copy of a finished run that looks interrupted after its last epoch (no results, no weights)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "results.json").unlink()
    (run / "model.safetensors").unlink()
    return run


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_planted_checkpoint_never_runs(finished_tiny_run, tmp_path, how):
    run = _interrupted_copy(finished_tiny_run, tmp_path)
    marker = tmp_path / "pwned"
    payload = {"model": _Planted(marker), "epoch": 1}
    if how == "torch.save":
        torch.save(payload, run / "checkpoint.pth")
    else:
        (run / "checkpoint.pth").write_bytes(pickle.dumps(payload))
    result = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert result.exit_code == 2 and "holds objects other than tensors and numbers" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not marker.exists()
    # compare resuming such a cell refuses it the same way
    with pytest.raises(RunDirError, match="refusing to load it"):
        _run_one(load_run_recipe(run), run, None, False)
    assert not marker.exists()


def test_a_checkpoint_ndeconv_wrote_is_plain_data(finished_tiny_run):
    state = read_checkpoint(finished_tiny_run / "checkpoint.pth")
    assert state["epoch"] == 2 and set(state) == {"model", "opt", "epoch", "rng", "smooth_loss", "callbacks"}


def test_a_truncated_checkpoint_is_one_line_naming_the_file(finished_tiny_run, tmp_path):
    run = _interrupted_copy(finished_tiny_run, tmp_path)
    data = (run / "checkpoint.pth").read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert result.exit_code == 2 and f"{run / 'checkpoint.pth'}: unreadable checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1e-3", 1e-3), ("1E5", 1e5), ("2.5E-2", 0.025),
                                         ("3.0e-4", 3e-4), ("1e0", 1.0)])
def test_numbers_as_people_write_them(text, value, tiny_parquet, tmp_path):
    recipe = load_recipe("digits")
    assert apply_override(recipe, "optim.weight_decay", text).optim.weight_decay == value  # --set key=5e-4
    raw = write_tiny_recipe(tmp_path / "r.yaml", tiny_parquet).read_text()
    assert "weight_decay: 0.0005" in raw
    (tmp_path / "e.yaml").write_text(raw.replace("weight_decay: 0.0005", f"weight_decay: {text}"))
    assert load_recipe(tmp_path / "e.yaml").optim.weight_decay == value  # in a recipe file


def test_exponent_numbers_keep_their_range_checks():
    with pytest.raises(RecipeError, match="optim.weight_decay must be >= 0, got -0.0005"):
        apply_override(load_recipe("digits"), "optim.weight_decay", "-5e-4")


@pytest.mark.parametrize("args, key", [(["--lr", "nan"], "optim.lr"), (["--lr", "inf"], "optim.lr"),
                                       (["--set", "optim.lr=.nan"], "optim.lr"),
                                       (["--set", "optim.weight_decay=.inf"], "optim.weight_decay"),
                                       (["--set", "model.deconv.eps=-.inf"], "model.deconv.eps")])
def test_non_finite_numbers_are_refused(args, key, tmp_path):
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and f"{key} must be a finite number" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


class _PoisonAt(Callback):
    """Make a weight NaN after the given optimizer step of the given epoch (1-based)."""

    order = 5

    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def after_step(self):
        if (self.epoch + 1, self.iter + 1) == self.at:
            with torch.no_grad():
                next(self.learn.model.parameters()).view(-1)[0] = float("nan")


def test_divergence_stops_the_run_and_is_recorded(tiny_parquet, tmp_path):
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet), {"train.epochs": 3})
    out = tmp_path / "run"
    with pytest.raises(DivergedError) as err:
        train(recipe, out, progress=False, cbs=[_PoisonAt(2, 3)])
    message = str(err.value)
    assert "training diverged at epoch 2, step 3 (learning rate" in message
    assert "the weights after the step are not finite" in message and "epoch 1 is the last finite one" in message
    results = json.loads((out / "results.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert results["status"] == "diverged" and results["accuracy"] is None
    assert results["diverged"]["epoch"] == 2 and results["diverged"]["step"] == 3
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1  # the last finite checkpoint stays
    assert all(torch.isfinite(v).all() for v in read_checkpoint(out / "checkpoint.pth")["model"].values()
               if v.is_floating_point())
    assert not (out / "model.safetensors").exists()
    with pytest.raises(DivergedError, match="this run diverged"):
        resume(out, progress=False)


def test_a_huge_learning_rate_is_a_one_line_divergence(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_recipe), "--norm", "bn", "--lr", "1e6", "--epochs", "3",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 2 and "training diverged at epoch 1" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    results = json.loads((out / "results.json").read_text(), parse_constant=pytest.fail)
    assert results["status"] == "diverged"


def test_compare_marks_diverged_cells_and_never_picks_them(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(tiny_recipe), "--models", "convnet3", "--epochs", "1",
                                 "--norms", "bn", "--grid", "optim.lr=0.05,1e6", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    lines = (out / "table.md").read_text().splitlines()
    best = next(line for line in lines if line.startswith("| convnet3 | BN | 1 |"))  # the best-setting table
    assert best.rstrip().endswith("| optim.lr=0.05 |")
    every = [line for line in lines if "optim.lr=1e6" in line]
    assert every and all("| diverged |" in line for line in every)
    ok = json.loads((out / "convnet3-bn-1ep-optim.lr=0.05" / "results.json").read_text())
    assert ok["status"] == "finished" and f"{100 * ok['accuracy']:.2f}" in best


def test_two_runs_into_one_directory_at_the_same_instant(tiny_recipe, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "ndeconv", "train", str(tiny_recipe), "--epochs", "1",
                               "--seed", str(seed), "--out", str(out), "-q"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    done = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in done)
    assert codes == [0, 2], done
    winner = 1 + [code for code, _ in done].index(0)
    refused = next(err for code, err in done if code == 2).strip()
    assert len(refused.splitlines()) == 1 and ("holds the lock" in refused or "another run wrote it first" in refused
                                               or "already exists and is not empty" in refused)
    config = load_run_recipe(out)
    assert config.train.seed == winner  # the directory is the winner's alone
    assert json.loads((out / "results.json").read_text())["status"] == "finished"
    assert not (out / ".lock").exists()


def test_a_held_lock_refuses_and_a_stale_one_does_not(finished_tiny_run, tmp_path):
    from ndeconv.train.lock import run_lock

    run = _interrupted_copy(finished_tiny_run, tmp_path)
    with run_lock(run, fresh=False):
        result = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert result.exit_code == 2 and "another ndeconv run is writing into it" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (run / ".lock").touch()  # left by a killed run: nobody holds it
    result = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "results.json").read_text())["status"] == "finished"


_BOMB = """name: bomb
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
data: {builtin: digits, num_classes: 10, image_size: 8, channels: 1, mean: [0.3], std: *h}
model: {name: convnet3}
optim: {lr: *h}
train: {epochs: 1, batch_size: 8}
"""


@pytest.mark.parametrize("text, message", [
    (_BOMB, "optim.lr must be a number, got [["),
    ("name: r\ndata: {builtin: digits, num_classes: 10, image_size: 1000000000, channels: 1, mean: [0.3], "
     "std: [0.3]}\nmodel: {name: convnet3}\noptim: {lr: 0.1}\ntrain: {epochs: 1, batch_size: 8}\n",
     "data.image_size must be at most 8192, got 1000000000"),
    ("name: r\ndata: {builtin: digits, num_classes: 10, image_size: 8, channels: 1, mean: [0.3], std: [0.3]}\n"
     "model: {name: convnet3}\noptim: {lr: 0.1}\ntrain: {epochs: 1, batch_size: 8}\naugment: {scale: [0.5, 2]}\n",
     "augment.scale must be [min, max] with 0 < min <= max <= 1, got [0.5, 2.0]"),
])
def test_hostile_recipes_are_one_bounded_line(text, message, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and message in result.output  # [min, max] not eaten as rich markup
    assert len(result.output.strip().splitlines()) == 1 and len(result.output) < 2100
    assert not (tmp_path / "run").exists()


def test_binary_recipes_and_huge_seeds_are_one_line(tmp_path):
    binary = tmp_path / "r.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    result = runner.invoke(app, ["train", str(binary), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "not a recipe (not UTF-8 text" in result.output
    result = runner.invoke(app, ["train", "--set", "train.seed=99999999999999999999", "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "train.seed must be in [0, 4294967295]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()


def test_damaged_run_files_are_run_dir_errors_naming_the_file(finished_tiny_run, tmp_path):
    import ndeconv

    run = tmp_path / "run"
    shutil.copytree(finished_tiny_run, run)
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match=f"{weights}: unreadable weights, truncated or damaged"):
        ndeconv.load(run)
    result = runner.invoke(app, ["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "m.st")])
    assert result.exit_code == 2 and "unreadable weights" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (run / "config.yaml").write_text("train: [unclosed\n")
    with pytest.raises(RunDirError, match=f"{run / 'config.yaml'}: damaged, not valid YAML"):
        ndeconv.load(run)


def test_a_failed_write_names_the_file_and_the_cause(tiny_recipe, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = f"ulimit -f 100; exec {sys.executable} -m ndeconv train {tiny_recipe} --epochs 2 --out {out} -q"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith(f"error: {out / 'checkpoint.pth'}: could not write it (the file-size limit (102400 bytes")
    assert f"ndeconv train --resume {out}" in err
    assert not list(out.glob(".*.tmp")) and not (out / "results.json").exists()


def _parquet_split(path, rows):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=4)})
    datasets.Dataset.from_dict({"img": [r[0] for r in rows], "label": [r[1] for r in rows]},
                               features=features).to_parquet(str(path))


def test_an_empty_split_is_one_line_before_any_directory(tiny_parquet, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(next(tiny_parquet.glob("test-*.parquet")), data / "test-00000-of-00001.parquet")
    _parquet_split(data / "train-00000-of-00001.parquet", [])
    recipe = write_tiny_recipe(tmp_path / "r.yaml", data)
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "split 'train'" in result.output and "is empty" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_an_undecodable_image_uncached_is_one_line_naming_split_and_row(tiny_parquet, tmp_path):
    import io

    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(next(tiny_parquet.glob("test-*.parquet")), data / "test-00000-of-00001.parquet")
    good = io.BytesIO()
    Image.new("RGB", (16, 16)).save(good, format="PNG")
    rows = [({"bytes": good.getvalue(), "path": None}, i % 4) for i in range(40)]
    rows[23] = ({"bytes": b"not an image at all", "path": None}, 3)
    _parquet_split(data / "train-00000-of-00001.parquet", rows)
    recipe = write_tiny_recipe(tmp_path / "r.yaml", data, data={"cache": False}, train={"batch_size": 8})
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "training split: image 23 of column 'img' cannot be decoded" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("values, finite", [([3e38, 3e38, -3e38, 3e38], True),  # a float32 sum would overflow
                                            ([1.0, float("inf"), 2.0, 3.0], False),
                                            ([float("inf"), float("-inf"), 0.0, 0.0], False),  # inf - inf
                                            ([1.0, 2.0, float("nan"), 0.0], False)])
def test_the_weight_check_is_exact(values, finite):
    """Weights count as diverged exactly when one of them is NaN or infinite, however large the rest."""
    from types import SimpleNamespace

    from ndeconv.train.callbacks import DivergenceCallback, NonFinite

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(values).view(2, 2))
    check = DivergenceCallback()
    check.learn = SimpleNamespace(model=model, epoch=0, iter=0, opt=SimpleNamespace(hypers=[{"lr": 0.1}]))
    if finite:
        check.after_step()
    else:
        with pytest.raises(NonFinite, match="the weights after the step are not finite"):
            check.after_step()
