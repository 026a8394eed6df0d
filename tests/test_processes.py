"""The processes of a run: a dead rank, resuming on the recorded process count, a process alone where
the environment prepares several, and two launchers standing in for two machines (real
`accelerate launch`, gloo on CPU)."""

import json
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from ndeconv.cli import app
from ndeconv.cli.launch import accelerate_command
from ndeconv.errors import LaunchError
from ndeconv.rundir import read_metrics
from ndeconv.train import resume
from runstate import assert_identical, rank_process, run_state, wait_for_rows
from tinydata import write_tiny_recipe

CLI = [sys.executable, "-m", "ndeconv"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--dynamo_backend", "no", "--mixed_precision", "no"]
TWO = ["--epochs", "3", "--batch-size", "4", "-q"]  # 32 steps per epoch and process: time to kill mid-run
runner = CliRunner()


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def _imported(stderr: str) -> set[str]:
    """The modules a process started with ``python -X importtime`` imported (its children print none)."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_parquet):
    """The tiny recipe, an uninterrupted 2-process run of it through `ndeconv train --num-processes 2`,
    and the modules the command that launched it imported."""
    root = tmp_path_factory.mktemp("two-processes")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet)
    proc = subprocess.run([CLI[0], "-X", "importtime", *CLI[1:], "train", str(recipe), *TWO, "--num-processes", "2",
                           "--out", str(root / "ref")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((root / "ref" / "launch.json").read_text()) == {"num_processes": 2, "sync_stats": True}
    return recipe, run_state(root / "ref"), _imported(proc.stderr)


def test_the_command_line_plans_and_launches_without_the_training_stack(two_process_run):
    """Only the processes train: the command that plans the run and launches them loads neither
    fastai nor Accelerate nor ``datasets`` (seconds on a small machine before they start)."""
    imported = two_process_run[2]
    assert {"ndeconv.train.plan", "ndeconv.cli.launch"} <= imported
    assert not {"fastai", "accelerate", "datasets"} & imported


def _started_two_processes(recipe, out) -> subprocess.Popen:
    """A 2-process run of ``recipe`` into ``out`` through ``--num-processes 2``, once its first epoch is done."""
    proc = subprocess.Popen(CLI + ["train", str(recipe), *TWO, "--num-processes", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(out / "metrics.csv", 1, proc)
    return proc


@pytest.mark.slow
def test_two_process_run_killed_and_resumed_through_the_launcher_is_exact(two_process_run, tmp_path):
    recipe, reference, _ = two_process_run
    out = tmp_path / "run"
    proc = _started_two_processes(recipe, out)
    tree = psutil.Process(proc.pid)
    for p in [tree, *tree.children(recursive=True)]:  # the CLI, the launcher and both ranks
        p.kill()
    proc.communicate(timeout=60)
    assert not (out / "results.json").exists() and 1 <= len(read_metrics(out / "metrics.csv")) < 3
    resumed = subprocess.run(CLI + ["train", "--resume", str(out), "--num-processes", "2", "-q"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
    assert_identical(run_state(out), reference)


@pytest.mark.slow
def test_a_dead_process_is_one_line_and_the_resume_takes_the_recorded_processes(two_process_run, tmp_path):
    recipe, reference, _ = two_process_run
    out = tmp_path / "run"
    proc = _started_two_processes(recipe, out)
    rank_process(proc.pid, 1).kill()
    killed = time.time()
    _, stderr = proc.communicate(timeout=120)
    assert time.time() - killed < 60  # the survivor and the launcher do not wait for a collective's timeout
    assert proc.returncode == 2
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr, stderr[-3000:]
    lines = _error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    assert "process 1 of 2 was killed by SIGKILL" in lines[0] and f"ndeconv train --resume {out}" in lines[0]
    assert not any(line.strip() for line in stderr.splitlines() if not line.startswith("error:")), stderr[-3000:]
    assert not (out / "results.json").exists()
    resumed = subprocess.run(CLI + ["train", "--resume", str(out), "-q"], capture_output=True, text=True,
                             timeout=600)  # no --num-processes: the run's own two
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
    assert_identical(run_state(out), reference)


def test_the_launcher_process_imports_neither_timm_nor_the_models():
    """It only launches: the package's ``__init__`` (timm, the models: seconds on a small machine)
    would delay every process it starts."""
    command = accelerate_command(2)
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:], "--help"], capture_output=True, text=True,
                          timeout=300)
    imported = _imported(proc.stderr)
    assert proc.returncode == 0 and "--num_processes" in proc.stdout, proc.stderr[-3000:]
    assert {"torch.distributed.run", "accelerate.commands.launch", "ndeconv.cli.launch"} <= imported
    assert not {"timm", "ndeconv.models", "fastai"} & imported


def test_resume_on_other_processes_is_refused_in_one_line(finished_tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_tiny_run, run)
    assert json.loads((run / "launch.json").read_text()) == {"num_processes": 1, "sync_stats": True}
    for flags, words in ((["--num-processes", "2"], "trained on 1 process(es)"),
                         (["--no-sync-stats"], "trained with synchronised statistics")):
        result = runner.invoke(app, ["train", "--resume", str(run), *flags])
        assert result.exit_code == 2 and words in result.output and flags[0] in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    # the library refuses it too, whoever launched it: an interrupted run recorded on two processes
    (run / "results.json").unlink()
    (run / "launch.json").write_text(json.dumps({"num_processes": 2, "sync_stats": True}))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(LaunchError, match="trained on 2 process.*resumed on 1"):
        resume(run, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written, lock let go


@pytest.mark.parametrize("env, words", [({"MASTER_ADDR": "127.0.0.1"}, "MASTER_ADDR is set"),
                                        ({"SLURM_NNODES": "2"}, "SLURM job has 2 nodes")])
def test_a_lone_process_where_the_environment_prepares_several_is_refused(tiny_recipe, tmp_path, monkeypatch,
                                                                          env, words):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_recipe), "--out", str(out), "-q"])
    assert result.exit_code == 2 and words in result.output and "trains alone" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machines(recipe, out, multi_gpu: bool) -> list[subprocess.CompletedProcess]:
    """Two `accelerate launch` commands on this host as machine 0 and 1 of two, started together."""
    port = _free_port()
    procs = [subprocess.Popen(ACCELERATE + (["--multi_gpu"] if multi_gpu else []) + [
        "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip",
        "127.0.0.1", "--main_process_port", str(port), "-m", "ndeconv", "train", str(recipe), *TWO, "--out",
        str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


@pytest.mark.slow
def test_two_launchers_as_two_machines_train_one_run_identical_to_two_local_processes(two_process_run, tmp_path):
    recipe, reference, _ = two_process_run
    out = tmp_path / "run"
    machines = _machines(recipe, out, multi_gpu=True)
    for m in machines:
        assert m.returncode == 0, m.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
    assert_identical(run_state(out), reference)


@pytest.mark.slow
def test_two_machines_without_a_process_group_are_refused(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    for m in _machines(tiny_recipe, out, multi_gpu=False):
        assert m.returncode != 0
        lines = _error_lines(m.stderr)
        assert len(lines) == 1 and "trains alone although MASTER_ADDR is set" in lines[0], m.stderr[-3000:]
    assert not out.exists()
