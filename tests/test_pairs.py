"""Run features that meet: every pair of levels of the run's features is trained together at least
once (an all-pairs covering of their product, not the product itself), on embedded data.

Each cell either finishes with a correct ``results.json`` (its ``steps`` equal to the optimizer steps
every process took, counted from outside by :mod:`stepcount`, and to the steps its length gives), or
is refused in one line before anything is written. Single-process cells run through the command
line in this process; two-process cells through ``ndeconv train --num-processes 2`` (real
``accelerate launch``, gloo). A resumed cell is interrupted after its first epoch and continued with
``--resume``.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import yaml
from budgetclock import fake_clock
from runstate import tensorboard_scalars
from tinydata import N_TRAIN, write_tiny_recipe
from typer.testing import CliRunner

import stepcount
from ndeconv.cli import app
from ndeconv.rundir import read_metrics

FACTORS: dict[str, list] = {
    "norm": ["bn", "gn", "none", "paper", "fast"],
    "length": ["epochs", "fraction", "budget", "steps"],
    "schedule": ["cosine", "one_cycle", "constant", "piecewise_linear"],
    "precision": ["fp32", "bf16", "fp16"],
    "processes": [1, 2],
    "sync_stats": [True, False],
    "task": ["classification", "segmentation"],
    "averaging": [False, True],
    "tta": [False, True],
    "resume": [False, True],
    "tracking": [False, True],
}
BATCH, SEGMENTATION_TRAIN, STEPS, BUDGET_SECONDS = 32, 128, 11, 0.3
#: Pairs refused before training (each has its own test below), and the words of their one-line error.
REFUSED = {("task", "segmentation", "tta", True): "train.tta: test-time augmentation is not available"}
runner = CliRunner()


def _pairs(cell: dict) -> set:
    return {(a, cell[a], b, cell[b]) for a, b in itertools.combinations(cell, 2)}


def _allowed(cell: dict) -> bool:
    return not any(cell.get(a) == va and cell.get(b) == vb for a, va, b, vb in REFUSED)


def all_pairs(factors: dict[str, list]) -> list[dict]:
    """A small set of cells in which every pair of levels of two factors occurs, but the refused
    pairs (greedy, deterministic)."""
    names = list(factors)
    uncovered = {(a, va, b, vb) for a, b in itertools.combinations(names, 2) for va in factors[a] for vb in factors[b]
                 if _allowed({a: va, b: vb})}
    cells = []
    while uncovered:
        a, va, b, vb = min(uncovered, key=lambda p: (names.index(p[0]), names.index(p[2]), repr(p)))
        cell = {a: va, b: vb}
        for name in names:
            if name not in cell:
                options = [v for v in factors[name] if _allowed({**cell, name: v})]
                cell[name] = max(options, key=lambda v: sum(
                    (x, cell.get(x, v if x == name else None), y, cell.get(y, v if y == name else None)) in uncovered
                    for x, y in itertools.combinations(names, 2)))
        cell = {name: cell[name] for name in names}
        cells.append(cell)
        uncovered -= _pairs(cell)
    return cells


#: Two processes (a launch costs most of a cell's time): each level of every other factor once, the
#: costly ones (a resume launches twice, segmentation, a budget's calibration) in one cell each. The
#: pairs between the other factors are all covered in one process (where statistics have nothing to
#: synchronise, so ``--no-sync-stats`` is only recorded).
TWO_PROCESSES = [
    dict(norm="bn", length="epochs", schedule="cosine", precision="fp32", task="classification", averaging=False,
         tta=False, resume=True, sync_stats=True, tracking=True),
    dict(norm="gn", length="fraction", schedule="one_cycle", precision="bf16", task="segmentation", averaging=True,
         tta=False, resume=False, sync_stats=True, tracking=False),
    dict(norm="none", length="budget", schedule="constant", precision="fp16", task="classification", averaging=False,
         tta=True, resume=False, sync_stats=True, tracking=False),
    dict(norm="paper", length="steps", schedule="piecewise_linear", precision="fp32", task="classification",
         averaging=True, tta=False, resume=False, sync_stats=True, tracking=True),
    dict(norm="fast", length="epochs", schedule="cosine", precision="bf16", task="classification", averaging=False,
         tta=False, resume=False, sync_stats=False, tracking=False),
]
CELLS = [{**cell, "processes": 1} for cell in all_pairs({k: v for k, v in FACTORS.items() if k != "processes"})] + \
    [{**cell, "processes": 2} for cell in TWO_PROCESSES]
CELLS = [{name: cell[name] for name in FACTORS} for cell in CELLS]


def test_the_cells_cover_every_pair_but_the_refused():
    covered = set().union(*(_pairs(c) for c in CELLS))
    for a, b in itertools.combinations(FACTORS, 2):
        for va, vb in itertools.product(FACTORS[a], FACTORS[b]):
            assert ((a, va, b, vb) in covered) == _allowed({a: va, b: vb}), (a, va, b, vb)
    assert len(CELLS) < 40 and sum(c["processes"] == 2 for c in CELLS) == 5  # not the product's 19,200 cells


def _overrides(cell: dict) -> list[str]:
    length = {"epochs": "train.epochs=2", "fraction": "train.epochs=1.5", "steps": f"train.steps={STEPS}",
              "budget": f"train.budget={BUDGET_SECONDS}s"}[cell["length"]]
    sets = [length, f"optim.schedule={cell['schedule']}", f"train.precision={cell['precision']}",
            f"train.batch_size={BATCH}", "model.norm=" + ("deconv" if cell["norm"] in ("paper", "fast") else cell["norm"])]
    if cell["norm"] == "fast":
        sets.append("model.deconv.preset=fast")
    if cell["schedule"] == "piecewise_linear":
        sets.append("optim.lr_points=[[0,0.2],[0.3,1],[1,0.1]]")
    if cell["averaging"]:
        sets.append("optim.lookahead_every=3")
    if cell["tta"]:
        sets.append("train.tta=true")
    if cell["tracking"]:
        sets.append("train.log_with=[tensorboard]")
    if cell["task"] == "segmentation":
        sets += [f"train.limit_train={SEGMENTATION_TRAIN}", "model.deconv.block=16"]
    return [arg for s in sets for arg in ("--set", s)]


def _steps_per_epoch(cell: dict) -> int:
    """Batches per epoch and process, from the data's size (every process gets an equal shard, the
    last partial batch dropped)."""
    n = SEGMENTATION_TRAIN if cell["task"] == "segmentation" else N_TRAIN
    return n // cell["processes"] // BATCH


def _expected_steps(cell: dict, recorded: dict) -> int:
    per_epoch = _steps_per_epoch(cell)
    if cell["length"] == "budget":
        return max(1, math.floor(BUDGET_SECONDS / recorded["step_seconds"]))
    return {"epochs": 2 * per_epoch, "fraction": math.ceil(1.5 * per_epoch), "steps": STEPS}[cell["length"]]


def _train(cell: dict, args: list[str], tmp_path, counts, interrupt_after: int | None) -> tuple[int, str]:
    """Exit status and output of ``ndeconv train ARGS`` for ``cell``: in this process, or through the launcher."""
    if cell["processes"] == 1:
        stepcount.install(counts, interrupt_after)
        result = runner.invoke(app, ["train", *args, "-q"])
        return result.exit_code, result.output
    env = stepcount.environment(tmp_path / "site", counts, interrupt_after)
    proc = subprocess.run([sys.executable, "-m", "ndeconv", "train", *args, "-q"], capture_output=True, text=True,
                          env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_features_meet(cell, tiny_parquet, tmp_path, monkeypatch):
    import ndeconv.train.run as run

    monkeypatch.setattr(run, "build_learner", getattr(run.build_learner, "wrapped", run.build_learner))
    if cell["length"] == "budget" and cell["processes"] == 1:
        fake_clock(monkeypatch, [0.03])  # 10 steps whatever the machine's load
    recipe = (str(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)) if cell["task"] == "classification"
              else "digit_canvas")
    out, counts = tmp_path / "run", tmp_path / "counts"
    counts.mkdir()
    launch = (["--num-processes", "2"] if cell["processes"] == 2 else []) + ([] if cell["sync_stats"] else
                                                                            ["--no-sync-stats"])
    code, output = _train(cell, [recipe, *_overrides(cell), *launch, "--out", str(out)], tmp_path, counts,
                          1 if cell["resume"] else None)
    if cell["resume"]:
        assert code == 130 and not (out / "results.json").exists(), output[-3000:]
        assert len(read_metrics(out / "metrics.csv")) == 1
        code, output = _train(cell, ["--resume", str(out)], tmp_path, counts, None)
    assert code == 0, output[-3000:]
    results = json.loads((out / "results.json").read_text())
    recorded = yaml.safe_load((out / "config.yaml").read_text())["train"]
    taken = stepcount.counted(counts)
    if cell["processes"] == 2:  # every launched process left its group before exiting, the interrupted ones too
        assert stepcount.exits(counts) == ["left"] * 2 * (2 if cell["resume"] else 1)
    assert sorted(taken) == list(range(cell["processes"]))
    assert results["status"] == "finished" and results["world_size"] == cell["processes"]
    assert results["sync_stats"] is (cell["sync_stats"] and cell["processes"] == 2)
    assert json.loads((out / "launch.json").read_text()) == {"num_processes": cell["processes"],
                                                             "sync_stats": cell["sync_stats"]}
    assert set(taken.values()) == {results["steps"]} == {_expected_steps(cell, recorded)}
    epochs = math.ceil(results["steps"] / _steps_per_epoch(cell))
    assert results["epochs"] == epochs == len(read_metrics(out / "metrics.csv"))
    score = results["score"]
    assert results[score] is not None and 0 <= results[score] <= 1
    if cell["tracking"]:  # every epoch reached TensorBoard once, resumed or not, from the main process only
        assert sorted(step for step, _ in tensorboard_scalars(out / "logs")[f"epoch/{score}"]) == \
            list(range(1, epochs + 1))
    else:
        assert not (out / "logs").exists()


@pytest.mark.parametrize("pair, words", REFUSED.items(), ids=lambda p: "-".join(map(str, p)) if isinstance(p, tuple)
                         else p)
def test_refused_pairs_are_one_line_before_training(pair, words, tiny_parquet, tmp_path):
    a, va, b, vb = pair
    cell = {**CELLS[0], a: va, b: vb, "processes": 1, "resume": False}
    recipe = (str(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)) if cell["task"] == "classification"
              else "digit_canvas")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", recipe, *_overrides(cell), "--out", str(out), "-q"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], \
        result.output
    assert not out.exists()
