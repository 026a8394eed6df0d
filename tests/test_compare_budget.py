"""`ndeconv compare --budget` and the tables of a comparison at equal time: each norm's best setting per
budget, the time each needed to reach an accuracy, each at the other's seconds."""

import json
import re
from pathlib import Path

import pytest
import yaml
from budgetclock import fake_clock
from tinydata import write_tiny_recipe
from typer.testing import CliRunner

import ndeconv.train.budget as budget_mod
from ndeconv.cli import app
from ndeconv.compare import (
    Cell,
    equal_seconds_rows,
    equal_time_rows,
    table_markdown,
    table_rows,
    time_to_accuracy_rows,
)

runner = CliRunner()


@pytest.fixture()
def ten_ms_steps(monkeypatch):
    """Every calibration measures 10 ms a step."""
    return fake_clock(monkeypatch, [0.01])


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

    monkeypatch.setattr(ndeconv.compare.grid, "train", no_training)
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
    assert "| m | 3 | BN | 70.00 | 50.0 | 67.00 (45.0 s) | 76.00 | 67.5 | 70.00 (50.0 s) |" in table
    assert "| m | 1 | BN | 30.00 | 15.0 | no validation yet | 55.00 | 20.0 | 30.00 (15.0 s) |" in table
    assert "Training seconds (validation not counted): m 1 ep: BN 15.00 s, ND 20.00 s, m 3 ep: BN 50.00 s" in table


def test_every_norm_has_its_columns_and_nd_leads_against_the_best_other(tmp_path):
    cells = [
        _cell(tmp_path, "bn", "bn", [40, 60], [10, 10]),
        _cell(tmp_path, "gn", "gn", [45, 64], [10, 10]),
        _cell(tmp_path, "nd", "deconv", [50, 63], [15, 15]),
        _cell(tmp_path, "none", "none", [10, 12], [8, 8]),
    ]
    best = equal_time_rows(cells)[0]
    assert (best["BN"], best["GN"], best["ND"], best["none"]) == (60.0, 64.0, 63.0, 12.0)
    assert best["lead"] == pytest.approx(-1.0)  # ND against GN, the best of the others
    table = table_markdown([], [], "t", cells)
    assert "| model | budget | BN | BN setting | BN s | GN | GN setting | GN s | ND | ND setting | ND s | none | " \
           "none setting | none s | ND - best other |" in table
    assert "| m | 90s | 60.00 | recipe | 20.0 | 64.00 | recipe | 20.0 | 63.00 | recipe | 30.0 | 12.00 | recipe | " \
           "16.0 | -1.00 |" in table
    assert "| model | level | BN s | BN run | GN s | GN run | ND s | ND run | none s | none run | BN / ND |" in table
    rows = {r["level"]: r for r in time_to_accuracy_rows(cells, levels=[50])}
    assert (rows[50]["BN_seconds"], rows[50]["GN_seconds"], rows[50]["ND_seconds"]) == (20, 20, 15)
    assert "none_seconds" not in rows[50]


def test_the_readme_quick_start_compares_per_epoch_and_per_second(tmp_path, monkeypatch):
    """The README's first command, as written (on 64 digits, each calibration measuring 5 s a step),
    ends with the table per epoch and the one per training second, and writes both curves."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"```bash\n[^`]*?&& ndeconv (compare [^\n]+)\n```", readme).group(1).split()
    fake_clock(monkeypatch, [5.0])
    out = tmp_path / "quick"
    result = runner.invoke(app, [*command, "--limit-train", "64", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "convnet3-deconv-10s" / "results.json").read_text())["steps"] == 2
    table = (out / "table.md").read_text()
    assert "| model (params) | BN 1 ep | ND 1 ep |" in table and "**Equal training time**" in table
    assert "| convnet3 | 10s |" in table and (out / "curves.png").stat().st_size > 0
