"""Time-budgeted training (``train.budget``, ``--budget``): the calibrated steps, one schedule over them, resume."""

import math

import pytest
import yaml
from budgetclock import fake_clock
from learners import learner_for
from fastai.callback.core import Callback
from fastai.callback.schedule import SchedCos
from runstate import assert_identical, run_state
from tinydata import N_TRAIN, write_tiny_recipe
from typer.testing import CliRunner

import ndeconv.train.budget as budget_mod
from ndeconv.cli import app
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe, parse_budget
from ndeconv.rundir import read_metrics
from ndeconv.train import resume, train

runner = CliRunner()


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1.5m", 90), ("2.5", 2.5),
                                           (45, 45), ("1e2s", 100), (" 3 min ", 180)])
def test_budgets_read_as_seconds(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, message", [
    ("fast", "expected a duration such as 90s, 10m or 1h, got 'fast'"),
    ("-3m", "must be > 0, got '-3m'"),
    (0, "must be > 0, got 0"),
    ("0s", "must be > 0, got '0s'"),
    ("10 parsecs", "expected a duration"),
])
def test_bad_budgets_are_one_line_errors(text, message, tmp_path):
    with pytest.raises(RecipeError, match=message):
        parse_budget(text)
    result = runner.invoke(app, ["train", "--budget", str(text), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "train.budget" in result.output and message.split(",")[0] in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_budget_and_epochs_are_exclusive(tiny_parquet, tmp_path):
    result = runner.invoke(app, ["train", "--budget", "90s", "--epochs", "3", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--budget and --epochs are exclusive" in result.output
    both = write_tiny_recipe(tmp_path / "both.yaml", tiny_parquet, train={"budget": "1m"})  # epochs: 2 as well
    with pytest.raises(RecipeError, match="train.epochs and train.budget are exclusive"):
        load_recipe(both)
    neither = write_tiny_recipe(tmp_path / "neither.yaml", tiny_parquet, train={"epochs": None})
    with pytest.raises(RecipeError, match="train needs a length: epochs, budget or steps"):
        load_recipe(neither)
    # a budget given as an override replaces the file's epochs, and the reverse
    plain = write_tiny_recipe(tmp_path / "plain.yaml", tiny_parquet)
    budgeted = load_recipe(plain, {"train.budget": "2m"})
    assert (budgeted.train.budget, budgeted.train.epochs) == ("2m", None)
    back = load_recipe(plain, {"train.budget": "2m", "train.epochs": 3})
    assert (back.train.budget, back.train.epochs, back.train.steps) == (None, 3, None)


class StepRecorder(Callback):
    """The learning rate of every optimizer step the run takes, and the epochs it validated."""

    order = 95

    def before_fit(self):
        self.lrs, self.validated = [], []

    def after_batch(self):
        if self.training:
            self.lrs.append(self.opt.hypers[-1]["lr"])

    def after_validate(self):
        self.validated.append(self.epoch + 1)


@pytest.fixture()
def fixed_step_time(monkeypatch):
    """The first calibration measures 10 ms a step, later ones 20 ms: step counts are exact, and a
    second calibration shows in the count."""
    return fake_clock(monkeypatch, [0.01, 0.02])


def test_budgeted_run_takes_the_calibrated_steps_over_one_schedule(tiny_parquet, tmp_path, fixed_step_time):
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet), {"train.budget": "0.2s"})
    recorder = StepRecorder()
    run_dir, results = train(recipe, tmp_path / "run", progress=False, cbs=[recorder])
    steps, per_epoch = 20, N_TRAIN // recipe.train.batch_size  # 0.2 s / 10 ms; 8 batches of 32 per epoch
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert (config["budget"], config["steps"], config["step_seconds"], config["epochs"]) == ("0.2s", steps, 0.01, None)
    assert (results["steps"], results["step_seconds"], results["budget"]) == (steps, 0.01, "0.2s")
    assert len(recorder.lrs) == steps  # ends mid-epoch: 8 + 8 + 4
    peak = recipe.optim.lr
    assert recorder.lrs == pytest.approx([SchedCos(peak, 0.0)(i / steps) for i in range(steps)])
    assert recorder.lrs[0] == pytest.approx(peak) and recorder.lrs[-1] < 0.01 * peak
    epochs = math.ceil(steps / per_epoch)
    rows = read_metrics(run_dir / "metrics.csv")
    assert recorder.validated == [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert results["epochs"] == epochs and results["accuracy"] == rows[-1]["accuracy"]
    assert all(math.isfinite(r["train_loss"]) for r in rows)  # the partial epoch reports its training loss too


def test_a_real_calibration_fixes_the_steps_it_records(tiny_parquet, tmp_path):
    """The real clock (no fake): the steps are the budget over the measured step time, the run takes
    them, and its seconds are the sum of its epochs'. How close the run keeps to the budget depends
    on the machine's load, so no bound on elapsed time is asserted here."""
    budget = 2.0
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet), {"train.budget": f"{budget}s"})
    recorder = StepRecorder()
    run_dir, results = train(recipe, tmp_path / "run", progress=False, cbs=[recorder])
    rows = read_metrics(run_dir / "metrics.csv")
    assert results["step_seconds"] > 0 and results["steps"] == math.floor(budget / results["step_seconds"])
    assert len(recorder.lrs) == results["steps"]
    assert results["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows), abs=0.01)


class StopAfterEpoch(Callback):
    order = 80  # after RunDirCallback has checkpointed the epoch

    def after_epoch(self):
        if self.epoch == 0:
            raise KeyboardInterrupt


def test_resume_of_a_budgeted_run_is_bit_identical(tiny_parquet, tmp_path, fixed_step_time):
    recipe_file = write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)
    budgeted = load_recipe(recipe_file, {"train.budget": "0.2s"})
    with pytest.raises(KeyboardInterrupt):
        train(budgeted, tmp_path / "run", progress=False, cbs=[StopAfterEpoch()])
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 1
    _, results = resume(tmp_path / "run", progress=False)  # a new calibration would measure 20 ms: 10 steps
    assert len(fixed_step_time) == 1 and results["steps"] == 20  # calibrated once, before the interruption
    # the same steps without any calibration: calibration left no trace, resume continued exactly
    _, reference = train(load_recipe(recipe_file, {"train.steps": 20}), tmp_path / "ref", progress=False)
    assert reference["steps"] == 20 and reference["budget"] is None
    assert_identical(run_state(tmp_path / "run"), run_state(tmp_path / "ref"))


def test_calibration_restores_the_run_it_measured(tiny_parquet, tmp_path):
    """Timing steps trains the model; afterwards weights, optimizer and random states are as before."""
    from ndeconv.train.checkpoint import rng_state

    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet))
    learn, _ = learner_for(recipe, features=False)
    before, rng = {k: v.clone() for k, v in learn.model.state_dict().items()}, rng_state(learn)
    seconds = budget_mod.measure_step_seconds(learn)
    assert seconds > 0 and learn.opt is None
    assert_identical(dict(learn.model.state_dict()), before)
    assert_identical(rng_state(learn), rng)


def test_calibration_times_the_divergence_check(tiny_parquet, tmp_path, monkeypatch):
    """Every step of a run pays the divergence check, so the timed steps run it too (left out, a
    run of tiny steps overran its budget): it checks each of them, and nothing else is left in."""
    from ndeconv.train.callbacks import DivergenceCallback

    steps = []
    checked = DivergenceCallback.after_step

    def counted(self):
        steps.append(self.learn.train_iter)
        checked(self)

    monkeypatch.setattr(DivergenceCallback, "after_step", counted)
    recipe, recorder = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)), StepRecorder()
    learn, _ = learner_for(recipe, cbs=[recorder], features=False)
    budget_mod.measure_step_seconds(learn, warmup=1, timed=2)
    assert steps == [0, 1, 2]
    assert not hasattr(recorder, "lrs")  # an extra callback never saw those steps
