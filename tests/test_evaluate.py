"""Use a trained run: ``ndeconv evaluate`` gives the run's own validation numbers, ``ndeconv predict``
the model's own forward on image files; bad input is one line."""

import json
import os
import shutil
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import ndeconv
from ndeconv.cli import app
from ndeconv.data import make_dataloaders
from ndeconv.data.augment import BatchTransform
from ndeconv.evaluate import evaluate_run, predict_files
from ndeconv.rundir import load_run_recipe, read_results
from tinydata import CLASSES, tiny_arrays

runner = CliRunner()


@pytest.mark.parametrize("run_name, metrics, per_image", [
    ("finished_tiny_run", ("accuracy",), 1),                 # counts images
    ("canvas_run", ("miou", "pixel_accuracy"), 32 * 32),     # counts pixels (the ignore label left out)
])
def test_evaluate_gives_the_runs_own_last_validation(run_name, metrics, per_image, request):
    run = request.getfixturevalue(run_name)
    results, evaluation = read_results(run), evaluate_run(run)
    for key in metrics:
        assert evaluation[key] == pytest.approx(results[key], abs=1e-6), key
    assert evaluation["loss"] == pytest.approx(results["valid_loss"], rel=1e-5)
    cm = np.array(evaluation["confusion"])
    counted = evaluation["images"] * per_image
    assert cm.sum() == counted if per_image == 1 else 0.9 * counted <= cm.sum() <= counted
    assert np.trace(cm) == pytest.approx(evaluation[metrics[-1]] * cm.sum())  # accuracy over what was counted
    fused = evaluate_run(run, fuse=True)
    assert fused["confusion"] == evaluation["confusion"] and fused["loss"] == pytest.approx(evaluation["loss"],
                                                                                            rel=1e-5)


def test_the_confusion_matrix_counts_true_classes_in_rows(finished_tiny_run, tmp_path):
    run = tmp_path / "noisy"
    shutil.copytree(finished_tiny_run, run)
    weights = load_file(run / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    save_file({k: v + 0.5 * v.std() * torch.randn(v.shape, generator=generator) if v.is_floating_point() and v.dim() > 1
               else v for k, v in weights.items()}, run / "model.safetensors")  # a model that makes mistakes
    evaluation = evaluate_run(run)
    model, truth, predicted = ndeconv.load(run), [], []
    with torch.no_grad():
        for x, y in make_dataloaders(load_run_recipe(run), device="cpu").valid:
            truth.append(y)
            predicted.append(model(x).argmax(1))
    truth, predicted = torch.cat(truth).numpy(), torch.cat(predicted).numpy()
    by_hand = np.zeros((CLASSES, CLASSES), dtype=int)
    np.add.at(by_hand, (truth, predicted), 1)
    assert not (by_hand == by_hand.T).all()  # the orientation is visible
    assert evaluation["classes"] == ["0", "1", "2", "3"] and evaluation["images"] == 64
    assert (np.array(evaluation["confusion"]) == by_hand).all()
    assert evaluation["per_class_accuracy"] == pytest.approx([by_hand[c, c] / by_hand[c].sum() for c in range(CLASSES)])


def test_the_evaluate_command_writes_its_json_and_picture(finished_tiny_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(finished_tiny_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["accuracy"] == pytest.approx(read_results(finished_tiny_run)["accuracy"], abs=1e-6)
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG")


def _write_images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = tiny_arrays(n, seed=0)  # images of the tiny set's kind
    paths = []
    for i, a in enumerate(images):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(a).save(paths[-1])
    return paths, images


def test_predict_is_the_models_own_forward(finished_tiny_run, tmp_path):
    paths, images = _write_images(tmp_path / "images")
    predictions, bad = predict_files(finished_tiny_run, [tmp_path / "images"], top_k=2)
    assert not bad and [p["file"] for p in predictions] == [str(p) for p in sorted(paths)]
    recipe = load_run_recipe(finished_tiny_run)
    d = recipe.data
    x, _ = BatchTransform(d.image_size, d.mean, d.std, train=False)(
        (torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in images])), torch.zeros(len(images))))
    model = ndeconv.load(finished_tiny_run)
    with torch.no_grad():
        probs = model(x).softmax(1)
    by_file = {p["file"]: p["top"] for p in predictions}
    for path, p in zip(paths, probs):
        top = by_file[str(path)]
        assert top[0][0] == str(int(p.argmax())) and top[0][1] == pytest.approx(float(p.max()), rel=1e-5)
    fused, _ = predict_files(finished_tiny_run, paths, top_k=2, fuse=True)
    assert [p["top"][0][0] for p in fused] == [by_file[str(p)][0][0] for p in paths]


def test_predict_names_what_is_not_an_image_and_predicts_the_rest(finished_tiny_run, tmp_path):
    paths, _ = _write_images(tmp_path / "images", n=3)
    (tmp_path / "images" / "notes.png").write_text("not an image")
    grey = tmp_path / "images" / "grey.png"
    Image.fromarray(np.full((16, 16), 120, dtype=np.uint8)).save(grey)  # an RGB model converts it
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(finished_tiny_run), str(tmp_path / "images"), "--csv", str(out)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.png: not an image" in errors[0]
    rows = out.read_text().splitlines()
    assert rows[0].startswith("file,class1,probability1") and len(rows) == 1 + 4  # three images and the grey one


def test_bad_input_is_one_line(finished_tiny_run, tiny_recipe, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    result = runner.invoke(app, ["predict", str(finished_tiny_run), str(tmp_path / "empty")])
    assert result.exit_code == 2 and "a folder without images" in result.output
    for args in (["evaluate", str(tmp_path / "nope")], ["predict", str(tmp_path / "nope"), str(tmp_path / "empty")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "nope: no such run directory" in result.output
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((finished_tiny_run / "config.yaml").read_text())
    result = runner.invoke(app, ["evaluate", str(unfinished)])
    assert result.exit_code == 2 and "not a finished run" in result.output
    other = tmp_path / "other"
    other.mkdir()
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
    images, labels = tiny_arrays(8, seed=3)
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "label": labels.tolist()},
                                   features=features).to_parquet(str(other / f"{split}-0.parquet"))
    result = runner.invoke(app, ["evaluate", str(finished_tiny_run), "--data", str(other), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "differ from the run's" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "evaluation.json").exists()


@pytest.fixture(scope="module")
def canvas_run(tmp_path_factory):
    """A finished one-epoch run of the bundled digit-canvas segmentation recipe (128 canvases)."""
    out = tmp_path_factory.mktemp("canvas") / "run"
    result = runner.invoke(app, ["train", "digit_canvas", "--out", str(out), "-q", "--set", "train.epochs=1",
                                 "--set", "train.limit_train=128"])
    assert result.exit_code == 0, result.output
    return out


def test_predict_writes_a_segmentation_runs_own_masks(canvas_run, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / "in" / f"canvas{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(paths[-1])
    result = runner.invoke(app, ["predict", str(canvas_run), str(tmp_path / "in"), "--out", str(tmp_path / "masks")])
    assert result.exit_code == 0, result.output
    d = load_run_recipe(canvas_run).data
    x, _ = BatchTransform(d.image_size, d.mean, d.std, train=False)(
        (torch.from_numpy(np.stack([np.array(Image.open(p))[None] for p in paths])), torch.zeros(3)))
    with torch.no_grad():
        expected = ndeconv.load(canvas_run)(x).argmax(1)
    for path, mask in zip(paths, expected):
        written = np.array(Image.open(tmp_path / "masks" / path.name))
        assert written.shape == (32, 32) and (written == mask.numpy()).all()


def test_evaluate_takes_a_hub_id_from_the_cache(finished_tiny_run, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-deconv"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(finished_tiny_run, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("checkpoint.pth"))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ndeconv", "evaluate", "hf-hub:someone/tiny-deconv", "--out",
                           str(tmp_path / "eval")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert written["accuracy"] == pytest.approx(read_results(finished_tiny_run)["accuracy"], abs=1e-6)
