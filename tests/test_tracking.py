"""Experiment tracking through Accelerate's trackers: what TensorBoard receives is what the run measured."""

import pytest
from runstate import tensorboard_scalars
from typer.testing import CliRunner

from ndeconv.cli import app
from ndeconv.rundir import read_metrics

runner = CliRunner()


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_parquet):
    pytest.importorskip("tensorboard")
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("tracking")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet, train={"epochs": 2})
    result = runner.invoke(app, ["train", str(recipe), "--out", str(root / "run"), "-q", "--log-with", "tensorboard"])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_tensorboard_epoch_scalars_equal_metrics_csv(tracked_run):
    scalars = tensorboard_scalars(tracked_run / "logs")
    rows = read_metrics(tracked_run / "metrics.csv")
    assert len(rows) == 2
    for name in ("train_loss", "valid_loss", "accuracy", "seconds", "train_seconds"):
        assert [s for s, _ in scalars[f"epoch/{name}"]] == [1, 2]
        assert [v for _, v in scalars[f"epoch/{name}"]] == pytest.approx([r[name] for r in rows], rel=1e-6)


def test_tensorboard_steps_are_the_real_losses_and_schedule(tracked_run):
    """fastai's train_loss is a debiased moving average (beta 0.98) of the step losses: recomputed
    from the logged steps it must equal metrics.csv, so the steps are the losses the run trained on."""
    import yaml

    scalars = tensorboard_scalars(tracked_run / "logs")
    losses = scalars["train/loss"]
    steps = [s for s, _ in losses]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0
    rows = read_metrics(tracked_run / "metrics.csv")
    val, beta = 0.0, 0.98
    smoothed = []
    for count, (_, loss) in enumerate(losses, start=1):
        val = beta * val + (1 - beta) * loss
        smoothed.append(val / (1 - beta ** count))
    per_epoch = len(steps) // 2
    assert [smoothed[per_epoch - 1], smoothed[-1]] == pytest.approx([r["train_loss"] for r in rows], rel=1e-5)
    lrs = [v for _, v in scalars["train/lr"]]
    peak = yaml.safe_load((tracked_run / "config.yaml").read_text())["optim"]["lr"]
    assert lrs[0] == pytest.approx(peak, rel=1e-6)
    assert all(b <= a for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.05 * peak  # cosine to zero


@pytest.mark.parametrize("tracker,message", [("nope", "unknown tracker 'nope'"),
                                             ("aim", "tracker 'aim' is not installed")])
def test_a_bad_tracker_is_one_line_before_anything_is_written(tracker, message, tiny_recipe, tmp_path):
    if tracker == "aim":
        from accelerate.utils import is_aim_available

        if is_aim_available():
            pytest.skip("aim is installed here")
    result = runner.invoke(app, ["train", str(tiny_recipe), "--out", str(tmp_path / "run"), "-q",
                                 "--log-with", tracker])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: --log-with") or line.startswith("error: train.log_with"), line
    assert message in line
    assert not (tmp_path / "run").exists()
