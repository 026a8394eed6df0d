"""Time-budgeted training (``train.budget``, ``--budget``) and the equal-time comparison (``compare --budget``)."""

import json
import math
import types

import pytest
import yaml
from fastai.callback.core import Callback
from fastai.callback.schedule import SchedCos
from typer.testing import CliRunner

import ndeconv.train.budget as budget_mod
from ndeconv.cli import app
from ndeconv.compare import (Cell, equal_seconds_rows, equal_time_rows, parse_grid, table_markdown, table_rows,
                             time_to_accuracy_rows)
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe, parse_budget
from ndeconv.rundir import read_metrics
from ndeconv.train import resume, train
from runstate import assert_identical, run_state
from tinydata import N_TRAIN, write_tiny_recipe

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


def _fake_clock(monkeypatch, step_times: list[float]) -> list:
    """Calibration's clock: during the k-th calibration every reading is ``step_times[k]`` later
    than the last (the last value repeats). The timed steps still run, only their duration is
    made exact. Returns the learners calibrated so far."""
    clock = {"now": 0.0, "step": step_times[0]}
    calibrations: list = []
    real = budget_mod.measure_step_seconds

    def perf_counter() -> float:
        clock["now"] += clock["step"]
        return clock["now"]

    def measure(learn, *args, **kwargs):
        clock["step"] = step_times[min(len(calibrations), len(step_times) - 1)]
        calibrations.append(learn)
        return real(learn, *args, **kwargs)

    monkeypatch.setattr(budget_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(budget_mod, "measure_step_seconds", measure)
    return calibrations


@pytest.fixture()
def fixed_step_time(monkeypatch):
    """The first calibration measures 10 ms a step, later ones 20 ms: step counts are exact, and a
    second calibration shows in the count."""
    return _fake_clock(monkeypatch, [0.01, 0.02])


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


def test_a_real_budget_is_kept(tiny_parquet, tmp_path):
    budget = 4.0
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet), {"train.budget": f"{budget}s"})
    run_dir, results = train(recipe, tmp_path / "run", progress=False)
    rows = read_metrics(run_dir / "metrics.csv")
    validation = max(r["seconds"] - r["train_seconds"] for r in rows)
    assert results["steps"] == math.floor(budget / results["step_seconds"])
    assert results["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows), abs=0.01)
    # the calibration predicts the run: within the budget (plus timing noise) and not far below it
    assert 0.6 * budget <= results["train_seconds"] <= 1.2 * budget
    assert results["seconds"] <= 1.2 * budget + validation * len(rows)


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
    from ndeconv.data import make_dataloaders
    from ndeconv.rundir import build_model
    from ndeconv.train import build_learner, make_accelerator
    from ndeconv.train.checkpoint import rng_state

    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet))
    learn = build_learner(recipe, make_dataloaders(recipe, device="cpu"), build_model(recipe),
                          make_accelerator("fp32", cpu=True))
    before, rng = {k: v.clone() for k, v in learn.model.state_dict().items()}, rng_state(learn)
    seconds = budget_mod.measure_step_seconds(learn)
    assert seconds > 0 and learn.opt is None
    assert_identical(dict(learn.model.state_dict()), before)
    assert_identical(rng_state(learn), rng)


# --- compare --budget -------------------------------------------------------------------------

@pytest.fixture()
def ten_ms_steps(monkeypatch):
    """Every calibration measures 10 ms a step."""
    return _fake_clock(monkeypatch, [0.01])


@pytest.fixture()
def equal_time(tiny_parquet, tmp_path, ten_ms_steps):
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)
    out = tmp_path / "out"
    args = ["compare", str(recipe), "--models", "convnet3", "--budget", "0.08s,0.2s",
            "--grid", "bn:optim.lr=0.05,0.0003", "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, args


def test_compare_budget_trains_each_cell_for_its_time(equal_time):
    out, _ = equal_time
    names = sorted(p.parent.name for p in out.glob("*/results.json"))
    assert names == sorted(["convnet3-bn-0.08s-optim.lr=0.05", "convnet3-bn-0.08s-optim.lr=0.0003",
                            "convnet3-deconv-0.08s", "convnet3-bn-0.2s-optim.lr=0.05",
                            "convnet3-bn-0.2s-optim.lr=0.0003", "convnet3-deconv-0.2s"])
    for name in names:
        results = json.loads((out / name / "results.json").read_text())
        assert results["steps"] == (8 if "0.08s" in name else 20)
        lr = yaml.safe_load((out / name / "config.yaml").read_text())["optim"]["lr"]
        assert lr == (0.05 if "deconv" in name or "0.05" in name else 0.0003)  # ND keeps the recipe's rate


def test_compare_budget_picks_each_norms_best_cell(equal_time):
    out, _ = equal_time
    lines = (out / "table.md").read_text().splitlines()
    for budget in ("0.08s", "0.2s"):
        acc = {p.parent.name: 100 * json.loads(p.read_text())["accuracy"]
               for p in out.glob(f"*-{budget}*/results.json")}
        bn = {k: v for k, v in acc.items() if "-bn-" in k}
        best_bn = max(bn, key=bn.get)
        nd = acc[f"convnet3-deconv-{budget}"]
        row = next(line for line in lines if line.startswith(f"| convnet3 | {budget} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(bn[best_bn], abs=0.006)
        assert cells[3] == f"optim.lr={best_bn.rsplit('=', 1)[1]}" or bn[best_bn] == min(bn.values())
        assert float(cells[5]) == pytest.approx(nd, abs=0.006) and cells[6] == "recipe"
        assert float(cells[8]) == pytest.approx(nd - bn[best_bn], abs=0.011)
    assert any(line.startswith("**Time to accuracy**") for line in lines)


def test_compare_budget_reuses_finished_cells(equal_time, monkeypatch):
    out, args = equal_time
    import ndeconv.compare

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(ndeconv.compare, "train", no_training)
    monkeypatch.setattr(budget_mod, "measure_step_seconds", no_training)
    before = (out / "table.md").read_text()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "table.md").read_text() == before


def _cell(tmp_path, name, norm, accuracies, train_seconds, setting=(), seed=None, budget="90s"):
    run = tmp_path / name
    run.mkdir()
    rows = ["epoch,train_loss,valid_loss,accuracy,seconds,train_seconds"]
    rows += [f"{i + 1},1.0,1.0,{a / 100},{t + 5},{t}" for i, (a, t) in enumerate(zip(accuracies, train_seconds))]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    results = {"accuracy": accuracies[-1] / 100, "seconds": sum(train_seconds) + 5 * len(rows),
               "train_seconds": sum(train_seconds), "steps": 10, "params": 1000, "epochs": len(accuracies)}
    return Cell("m", norm, len(accuracies), run, results, setting, seed, not setting, budget)


def test_time_to_accuracy_takes_each_norms_fastest_run(tmp_path):
    cells = [
        _cell(tmp_path, "bn-a", "bn", [20, 45, 62], [10, 10, 10], (("optim.lr", "0.1"),)),
        _cell(tmp_path, "bn-b", "bn", [35, 55], [20, 20], (("optim.lr", "0.01"),)),
        _cell(tmp_path, "nd-0", "deconv", [52, 66], [30, 30], seed=0),
        _cell(tmp_path, "nd-1", "deconv", [48, 58], [25, 25], seed=1),
    ]
    rows = {r["level"]: r for r in time_to_accuracy_rows(cells, levels=[40, 50, 60, 70])}
    assert rows[40]["BN_seconds"] == 20 and rows[40]["BN_run"] == "90s, optim.lr=0.1"  # cumulative seconds
    assert rows[50]["BN_seconds"] == 30 and rows[60]["BN_seconds"] == 30  # bn-b: 55 only at 40 s
    assert rows[40]["ND_seconds"] == pytest.approx(27.5)  # the mean over seeds 0 and 1
    assert rows[50]["ND_seconds"] == pytest.approx((30 + 50) / 2)
    assert "ND_seconds" not in rows[60] and "BN_seconds" not in rows[70]  # seed 1 never reached 60
    best = {r["budget"]: r for r in equal_time_rows(cells)}["90s"]
    assert (best["BN"], best["BN_setting"]) == (62.0, "optim.lr=0.1")
    assert best["ND"] == pytest.approx(62.0) and best["lead"] == pytest.approx(0.0)


def test_equal_seconds_reads_each_norm_from_its_curve_at_the_others_end(tmp_path):
    cells = [
        _cell(tmp_path, "bn-3", "bn", [40, 60, 70], [10, 20, 20], budget=None),  # ends at 50 s
        _cell(tmp_path, "nd-3-0", "deconv", [55, 68, 75], [20, 20, 20], seed=0, budget=None),  # 20, 40, 60 s
        _cell(tmp_path, "nd-3-1", "deconv", [50, 66, 77], [25, 25, 25], seed=1, budget=None),  # 25, 50, 75 s
        _cell(tmp_path, "bn-1", "bn", [30], [15], budget=None),
        _cell(tmp_path, "nd-1", "deconv", [55], [20], budget=None),
        _cell(tmp_path, "bn-3-lr", "bn", [90, 95, 99], [1, 1, 1], (("optim.lr", "0.01"),), budget=None),
        _cell(tmp_path, "bn-90s", "bn", [10, 20, 30], [1, 1, 1]),
    ]
    rows = {r["epochs"]: r for r in equal_seconds_rows(cells)}
    assert set(rows) == {1, 3}  # a grid setting and a time budget are not the protocol
    three = rows[3]
    assert (three["BN"], three["BN_seconds"]) == (70.0, 50.0)
    assert three["ND"] == pytest.approx(76.0) and three["ND_seconds"] == pytest.approx(67.5)
    assert three["ND_at_BN"] == pytest.approx((68 + 66) / 2)  # each seed's last validation by 50 s (the second at 50 s)
    assert three["ND_at_BN_seconds"] == pytest.approx(45.0)
    assert (three["BN_at_ND"], three["BN_at_ND_seconds"]) == (70.0, 50.0)  # BN finished before 67.5 s
    one = rows[1]
    assert one["ND_at_BN"] is None and (one["BN_at_ND"], one["BN_at_ND_seconds"]) == (30.0, 15.0)
    table = table_markdown(table_rows(cells, [1, 3]), [1, 3], "t", cells)
    assert "| m | 3 | 70.00 | 50.0 | 67.00 (45.0 s) | 76.00 | 67.5 | 70.00 (50.0 s) |" in table
    assert "| m | 1 | 30.00 | 15.0 | no validation yet | 55.00 | 20.0 | 30.00 (15.0 s) |" in table
    assert "Training seconds (validation not counted): m 1 ep: BN 15.00 s, ND 20.00 s, m 3 ep: BN 50.00 s" in table


@pytest.mark.parametrize("item, message", [("gn:optim.lr=0.1", "a scoped key is norm:key.sub"),
                                           ("bn:=0.1", "a scoped key is norm:key.sub"),
                                           ("bn:=", "expected key.sub=value1")])
def test_scoped_grid_keys_name_a_norm(item, message):
    with pytest.raises(RecipeError, match=message):
        parse_grid([item])
