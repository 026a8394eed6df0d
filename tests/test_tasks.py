"""The task registry: a task registered from outside trains, reports and loads through the same
run directory as the built-in ones, with its own loss, metric and card labels."""

import dataclasses
import json

import pytest
import yaml
from fastai.callback.core import Callback
from torch import nn
from typer.testing import CliRunner

import ndeconv
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe
from ndeconv.cli import app
from ndeconv.tasks import get_task, register_task, resolve_task
from ndeconv.tasks.registry import _TASKS
from ndeconv.train import train


class SmoothedLoss(nn.CrossEntropyLoss):
    """Label smoothing, so the run's loss is visibly this task's own."""

    def __init__(self):
        super().__init__(label_smoothing=0.2)


def error_rate(inp, targ):
    return (inp.argmax(-1) != targ).float().mean()


@pytest.fixture()
def smoothed_task():
    base = get_task("classification")
    task = register_task(dataclasses.replace(
        base, name="smoothed", metric="error_rate", metric_label="error rate", card_metric="top-1 error",
        hub_name="Image Classification (smoothed)", loss=lambda recipe: SmoothedLoss(),
        metrics=lambda recipe: [error_rate], builtins=()))
    yield task
    _TASKS.pop("smoothed")


def test_a_registered_task_trains_reports_and_loads(smoothed_task, tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, {"task": "smoothed", "train.epochs": 1})
    seen = []
    run_dir, results = train(recipe, tmp_path / "run", progress=False, cbs=[_LossSpy(seen)])
    assert seen and all(isinstance(loss, SmoothedLoss) for loss in seen)
    assert results["task"] == "smoothed" and results["score"] == "error_rate"
    assert 0.0 <= results["error_rate"] <= 1.0 and "accuracy" not in results
    card = (run_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["model-index"][0]["results"][0]["task"]["name"] == "Image Classification (smoothed)"
    assert "top-1 error" in card
    model = ndeconv.load(run_dir)
    assert json.loads((run_dir / "results.json").read_text())["task"] == "smoothed" and not model.training


class _LossSpy(Callback):
    """Records the Learner's loss function when the fit starts."""

    def __init__(self, seen):
        self.seen = seen

    def before_fit(self):
        self.seen.append(self.learn.loss_func)


def test_an_unknown_task_names_the_known_ones(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, {"task": "detection"})  # the recipe's schema knows no task
    with pytest.raises(RecipeError, match=r"task: unknown task 'detection' \(known: classification, segmentation"):
        resolve_task(recipe)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe), "--set", "task=detection", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2 and "unknown task 'detection'" in result.output and not (tmp_path / "run").exists()
