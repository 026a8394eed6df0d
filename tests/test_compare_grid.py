"""`ndeconv compare`'s grid and runs: the Table 1 layout, reuse and resume, grid settings and their errors."""

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from ndeconv.cli import app
from ndeconv.compare import parse_grid
from ndeconv.errors import RecipeError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, tiny_parquet):
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("compare")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet)
    out = root / "out"
    args = ["compare", str(recipe), "--models", "convnet3", "--epochs", "1,2", "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, args


def test_compare_writes_the_table_in_the_papers_layout(comparison):
    out, _ = comparison
    assert sorted(p.name for p in out.iterdir()) == [
        "convnet3-bn-1ep", "convnet3-bn-2ep", "convnet3-deconv-1ep", "convnet3-deconv-2ep",
        "curves.png", "table.csv", "table.md"]
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"convnet3"}
    assert list(rows[0]) == ["model", "norm", "epochs", "seed", "protocol", "accuracy", "seconds", "params_M",
                             "run_dir"]
    for row in rows:
        norm = {"BN": "bn", "ND": "deconv"}[row["norm"]]
        assert row["run_dir"] == f"convnet3-{norm}-{row['epochs']}ep"
        results = json.loads((out / row["run_dir"] / "results.json").read_text())
        assert results["epochs"] == int(row["epochs"]) and results["norm"] == norm
        assert float(row["accuracy"]) == pytest.approx(100 * results["accuracy"], abs=0.006)
        assert float(row["seconds"]) == pytest.approx(results["seconds"], abs=0.06)
    deconv = json.loads((out / "convnet3-deconv-2ep" / "results.json").read_text())
    bn = json.loads((out / "convnet3-bn-1ep" / "results.json").read_text())
    table = (out / "table.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| model"))
    assert header == "| model (params) | BN 1 ep | ND 1 ep | BN 2 ep | ND 2 ep |"
    body = table[table.index(header) + 2]
    assert body.startswith(f"| convnet3 ({deconv['params'] / 1e6:.2f}M) | {100 * bn['accuracy']:.2f} |")
    assert (out / "curves.png").read_bytes().startswith(PNG)


def test_compare_reuses_finished_runs_and_resumes_interrupted_ones(comparison):
    out, args = comparison
    finished = out / "convnet3-bn-2ep" / "results.json"
    before = finished.stat().st_mtime_ns
    interrupted = out / "convnet3-deconv-1ep"
    (interrupted / "results.json").unlink()
    (interrupted / "model.safetensors").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert finished.stat().st_mtime_ns == before  # not trained again
    assert (interrupted / "results.json").is_file()  # resumed from its checkpoint and finished


def test_compare_refuses_a_directory_with_other_settings(comparison, tiny_parquet, tmp_path):
    out, args = comparison
    changed = args + ["--set", "optim.lr=0.01"]
    result = runner.invoke(app, changed)
    assert result.exit_code == 2 and "holds a run with different settings" in result.output


@pytest.fixture(scope="module")
def grid_comparison(tmp_path_factory, tiny_parquet):
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("grid")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet)  # model.deconv.n_iter 5
    out = root / "out"
    # the protocol (the recipe's lr, set to 0.0003) barely trains in one epoch; lr 0.05 learns the task
    args = ["compare", str(recipe), "--models", "convnet3", "--epochs", "1", "--set", "optim.lr=0.0003",
            "--grid", "optim.lr=0.0003,0.05", "--grid", "model.deconv.n_iter=5,2", "--seeds", "0,1",
            "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, args


def _grid_results(out):
    """{run directory name: results.json} of every run the comparison left."""
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")}


def test_grid_runs_every_cell_once(grid_comparison):
    out, _ = grid_comparison
    nd = [f"convnet3-deconv-1ep-optim.lr={lr}-model.deconv.n_iter={n}-seed{s}"
          for lr in ("0.0003", "0.05") for n in ("5", "2") for s in (0, 1)]
    bn = [f"convnet3-bn-1ep-optim.lr={lr}-seed{s}" for lr in ("0.0003", "0.05") for s in (0, 1)]  # n_iter: no BN effect
    runs = _grid_results(out)
    assert sorted(runs) == sorted(nd + bn)
    for name, results in runs.items():
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert f"optim.lr={config['optim']['lr']}" in name and name.endswith(f"seed{config['train']['seed']}")
        if results["norm"] == "deconv":
            assert f"n_iter={config['model']['deconv']['n_iter']}-" in name
    with open(out / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == len(runs)


def test_grid_table_shows_protocol_and_best_setting(grid_comparison):
    out, _ = grid_comparison
    runs = _grid_results(out)
    means: dict[tuple, list] = {}
    for name, results in runs.items():
        means.setdefault((results["norm"], name.rsplit("-seed", 1)[0]), []).append(100 * results["accuracy"])
    lines = (out / "table.md").read_text().splitlines()
    for norm, label in (("bn", "BN"), ("deconv", "ND")):
        cells = {k[1]: sum(v) / len(v) for k, v in means.items() if k[0] == norm}
        assert all(len(v) == 2 for k, v in means.items())  # two seeds per setting
        suffix = "-model.deconv.n_iter=5" if norm == "deconv" else ""
        protocol = cells[f"convnet3-{norm}-1ep-optim.lr=0.0003{suffix}"]
        best = max(cells.values())
        winners = [name for name, acc in cells.items() if acc == best]  # ties possible
        assert best > protocol + 20 and all("optim.lr=0.05" in name for name in winners)
        row = next(line for line in lines if line.startswith(f"| convnet3 | {label} | 1 |"))
        _, _, _, _, proto_cell, best_cell, setting, _ = row.split("|")
        assert float(proto_cell) == pytest.approx(protocol, abs=0.006)
        assert float(best_cell) == pytest.approx(best, abs=0.006)
        assert any(setting.strip().replace(", ", "-") in name for name in winners)
        table1 = next(line for line in lines if line.startswith("| convnet3 ("))
        assert f"{protocol:.2f}" in table1.split("|")[2 if norm == "bn" else 3]
        every = lines[lines.index("| model | norm | epochs | setting | accuracy | runs | seconds |"):]
        listed = [line for line in every if line.startswith(f"| convnet3 | {label} | 1 |")]
        assert sorted(float(line.split("|")[5]) for line in listed) == pytest.approx(sorted(cells.values()), abs=0.006)
        assert sum("(protocol)" in line for line in listed) == 1


def test_grid_reuses_finished_cells(grid_comparison):
    out, args = grid_comparison
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")}
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")} == before


@pytest.mark.parametrize("grid, message", [
    ("optim.lrr=0.1,0.2", "unknown key 'optim.lrr'"),
    ("optim.lr=fast,0.1", "optim.lr must be a number"),
    ("optim.lr", "expected key.sub=value1,value2"),
    ("optim.lr=0.1,0.1", "a value is repeated"),
])
def test_grid_errors_are_one_line_and_train_nothing(grid, message, tiny_recipe, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(tiny_recipe), "--models", "convnet3", "--epochs", "1",
                                 "--grid", grid, "--out", str(out), "-q"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.startswith("error: --grid optim.lr")  # the option as typed, not the library's argument
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("item, message", [("ln:optim.lr=0.1", "a scoped key is norm:key.sub"),
                                           ("bn:=0.1", "a scoped key is norm:key.sub"),
                                           ("bn:=", "expected key.sub=value1")])
def test_scoped_grid_keys_name_a_norm(item, message):
    with pytest.raises(RecipeError, match=message):
        parse_grid([item])


def test_compare_trains_and_labels_every_norm(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(tiny_recipe), "--models", "convnet3", "--epochs", "1",
                                 "--norms", "bn,gn,deconv,none", "--grid", "model.deconv.block=8,16",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["convnet3-bn-1ep", "convnet3-deconv-1ep-model.deconv.block=16",
                    "convnet3-deconv-1ep-model.deconv.block=8", "convnet3-gn-1ep", "convnet3-none-1ep"]
    for run in runs:
        norm = run.split("-")[1]
        assert json.loads((out / run / "results.json").read_text())["norm"] == norm
    with open(out / "table.csv") as f:
        assert sorted(r["norm"] for r in csv.DictReader(f)) == ["BN", "GN", "ND", "ND", "none"]
    table = (out / "table.md").read_text()
    assert "| model (params) | BN 1 ep | GN 1 ep | ND 1 ep | none 1 ep |" in table  # block 16 is the recipe's
    best = "| model | norm | epochs | protocol | best | best setting |"
    assert best in table
    assert {line.split(" | ")[1] for line in table.splitlines() if line.startswith("| convnet3 | ")} >= \
        {"BN", "GN", "ND", "none"}
    assert (out / "curves.png").read_bytes().startswith(PNG)
