"""Scale: real `accelerate launch` with 2 CPU processes over gloo, bf16 autocast on CPU, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ndeconv
from ndeconv.cli.launch import accelerate_command
from ndeconv.recipe import load_recipe
from ndeconv.rundir import build_model, read_metrics
from ndeconv.train import fit_recipe, make_accelerator
from learners import learner_for
from runstate import assert_identical as _assert_identical, default_interrupt, run_state as _run_state, wait_for_rows

ROOT = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "ndeconv"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_two_processes_through_accelerate_launch_agree(tiny_recipe, tmp_path):
    out, weights = tmp_path / "run", tmp_path / "weights"
    weights.mkdir()
    proc = subprocess.run(accelerate_command(2) + [str(ROOT / "ddp_probe.py"), str(tiny_recipe), str(out),
                                                   str(weights)], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.yaml", "weights"]  # one run directory
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["sync_stats"] is True
    assert results["accuracy"] > 0.375
    assert len(read_metrics(out / "metrics.csv")) == 2
    rank0, rank1 = (load_file(weights / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    running = [k for k in rank0 if "running_deconv" in k]
    assert running  # the deconvolution estimates are among the compared tensors
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    saved = load_file(out / "model.safetensors")
    for key in saved:
        assert torch.equal(saved[key], rank0[key]), key
    # the ranks drew different batches: each epoch's shards are disjoint and cover the 256 examples
    batches = [torch.load(weights / f"rank{r}-batches.pt") for r in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == 2 * 4  # 2 epochs of 128 examples per rank in batches of 32
    for epoch in range(2):
        seen = [[i for b in ranks[epoch * 4:(epoch + 1) * 4] for i in b] for ranks in batches]
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(256))


def test_bf16_autocast_is_active_on_cpu(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"train.precision": "bf16", "train.epochs": 2})
    model = build_model(recipe)
    convs = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)]
    seen = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype, m.training))) for c in convs]
    accelerator = make_accelerator("bf16", cpu=True)
    learn, length = learner_for(recipe, model, accelerator)
    try:
        fit_recipe(learn, recipe, length)
    finally:
        for h in hooks:
            h.remove()
        make_accelerator("fp32", cpu=True)  # leave Accelerate's per-process state as other tests expect
    train_outputs = [out for _, out, training in seen if training]
    assert train_outputs and all(dtype == torch.bfloat16 for dtype in train_outputs)
    assert any(inp == torch.bfloat16 for inp, _, _ in seen)  # later layers take bf16 activations
    assert all(c.running_deconv.dtype == torch.float32 for c in convs)  # statistics stay float32
    train_loss, valid_loss, accuracy = learn.recorder.values[-1]
    assert torch.isfinite(torch.tensor([train_loss, valid_loss])).all()
    assert accuracy > 0.375


def test_fp16_on_cpu_scales_the_loss_and_skips_overflowing_steps(tiny_recipe):
    from fastai.callback.core import Callback

    from ndeconv.train.callbacks import AcceleratorCallback

    class Overflow(Callback):
        """Makes the gradient of step 3 infinite, then records whether that step changed the weights."""
        order = 5  # before the Accelerator callback unscales in before_step

        def after_backward(self):
            if self.train_iter == 3:
                self.before = [p.detach().clone() for p in self.model.parameters()]
                self.scale = self.learn.accelerator.scaler.get_scale()
                next(iter(self.model.parameters())).grad.fill_(float("inf"))

        def after_batch(self):
            if self.train_iter == 4:  # train_iter counts batches done, so this is step 3's after_batch
                self.unchanged = all(torch.equal(b, p) for b, p in zip(self.before, self.model.parameters()))
                self.scale_after = self.learn.accelerator.scaler.get_scale()

    recipe = load_recipe(tiny_recipe, {"train.precision": "fp16", "train.epochs": 1})
    model = build_model(recipe)
    convs = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)]
    seen = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append((o.dtype, m.training))) for c in convs]
    accelerator = make_accelerator("fp16", cpu=True)
    overflow = Overflow()
    learn, length = learner_for(recipe, model, accelerator, cbs=[overflow])
    before = [p.detach().clone() for p in model.parameters()]
    try:
        fit_recipe(learn, recipe, length)
    finally:
        for h in hooks:
            h.remove()
        make_accelerator("fp32", cpu=True)
    assert isinstance(learn.accelerator, AcceleratorCallback)
    assert [dtype for dtype, training in seen if training] and all(d == torch.float16 for d, t in seen if t)
    assert all(c.running_deconv.dtype == torch.float32 for c in convs)  # statistics stay float32
    assert overflow.scale == 2.0 ** 16 and overflow.scale_after == 2.0 ** 15  # the scaler backed off
    assert overflow.unchanged  # the overflowing step was skipped
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # other steps were taken
    assert all(torch.isfinite(p).all() for p in model.parameters())
    train_loss, valid_loss, accuracy = learn.recorder.values[-1]
    assert torch.isfinite(torch.tensor([train_loss, valid_loss])).all() and accuracy > 0.5


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_parquet):
    """The reference: the tiny recipe trained for 3 epochs without interruption."""
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("uninterrupted")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet)
    out = root / "run"
    proc = subprocess.run(CLI + ["train", str(recipe), "--epochs", "3", "--batch-size", "8", "--out", str(out),
                                 "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, _run_state(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_exactly(uninterrupted, tmp_path, sig):
    recipe, reference = uninterrupted
    out = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["train", str(recipe), "--epochs", "3", "--batch-size", "8", "--out",
                                   str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_interrupt)
    wait_for_rows(out / "metrics.csv", 1, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and f"ndeconv train --resume {out}" in stderr
        assert "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    done = len(read_metrics(out / "metrics.csv"))
    assert 1 <= done < 3
    assert torch.load(out / "checkpoint.pth", weights_only=False)["epoch"] == done  # an epoch boundary
    # with progress output: epochs skipped on resume must not trip the progress callback
    resumed = subprocess.run(CLI + ["train", "--resume", str(out)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 3/3" in resumed.stderr and "epoch 1/3" not in resumed.stderr
    # not a terminal: one plain progress line per epoch trained, no bars
    epochs = [line.split()[1] for line in resumed.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs == [f"{e}/3" for e in range(done + 1, 4)]
    assert "\r" not in resumed.stderr and "\x1b[" not in resumed.stderr
    state = _run_state(out)
    assert [r["epoch"] for r in state["rows"]] == [1, 2, 3]
    _assert_identical(state, reference)
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 3 and results["accuracy"] == state["rows"][-1]["accuracy"]


@pytest.mark.slow
def test_run_stopped_in_its_first_epoch_resumes_from_the_start(uninterrupted, tmp_path):
    recipe, reference = uninterrupted
    out = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["train", str(recipe), "--epochs", "3", "--batch-size", "8", "--out",
                                   str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (out / "config.yaml").exists():
        assert proc.poll() is None and time.time() - start < 120, "the run never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (out / "checkpoint.pth").exists()
    resumed = subprocess.run(CLI + ["train", "--resume", str(out), "-q"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_identical(_run_state(out), reference)


def test_resume_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from ndeconv.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["train", "--resume", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "not a run directory (no config.yaml)" in empty.output
