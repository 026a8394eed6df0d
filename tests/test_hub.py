"""ndeconv.load, the model card and ndeconv push / hf-hub: loading (the hub itself is not reachable
here: hub loading is tested from a snapshot laid out in a local cache, offline)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

import ndeconv
from ndeconv.data import make_dataloaders
from ndeconv.errors import HubError, RunDirError
from ndeconv.layers import FastDeconv
from ndeconv.rundir import load_run_recipe, read_metrics

runner = CliRunner()


@pytest.fixture()
def run_dir(finished_tiny_run):
    return finished_tiny_run


def _valid_predictions(model, run_dir):
    dls = make_dataloaders(load_run_recipe(run_dir), device="cpu")
    preds, labels = [], []
    with torch.no_grad():
        for xb, yb in dls.valid:
            preds.append(model(xb))
            labels.append(yb)
    return torch.cat(preds), torch.cat(labels)


def test_load_reproduces_the_reported_accuracy_and_fuse_the_predictions(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    model = ndeconv.load(run_dir)
    assert not model.training and any(isinstance(m, FastDeconv) for m in model.modules())
    logits, labels = _valid_predictions(model, run_dir)
    assert (logits.argmax(1) == labels).float().mean().item() == pytest.approx(results["accuracy"])
    fused = ndeconv.load(run_dir, fuse=True)
    assert not any(isinstance(m, FastDeconv) for m in fused.modules())
    fused_logits, _ = _valid_predictions(fused, run_dir)
    torch.testing.assert_close(fused_logits, logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(fused_logits.argmax(1), logits.argmax(1))


NO_TRAINING_STACK = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastai", "fastcore", "accelerate"):
            raise ImportError(f"{name} may not be imported here")

sys.meta_path.insert(0, Refuse())
import torch
import ndeconv
model = ndeconv.load(sys.argv[1], fuse=sys.argv[3] == "fused")
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])), sys.argv[2] + ".out")
assert not any(m.split(".")[0] in ("fastai", "accelerate") for m in sys.modules)
"""


@pytest.mark.parametrize("kind", ["as trained", "fused"])
def test_load_needs_neither_fastai_nor_accelerate(run_dir, tmp_path, kind):
    x = torch.randn(5, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run([sys.executable, "-c", NO_TRAINING_STACK, str(run_dir), str(tmp_path / "x.pt"), kind],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        expected = ndeconv.load(run_dir, fuse=kind == "fused")(x)
    torch.testing.assert_close(torch.load(tmp_path / "x.pt.out"), expected, rtol=0, atol=0)


def test_load_fills_in_pretrained_cfg_from_the_recipe(run_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for model in (ndeconv.load(run_dir), ndeconv.load(run_dir, fuse=True)):
        cfg = model.pretrained_cfg
        d = config["data"]
        assert cfg["input_size"] == (d["channels"], d["image_size"], d["image_size"])
        assert list(cfg["mean"]) == d["mean"] and list(cfg["std"]) == d["std"]
        assert cfg["num_classes"] == d["num_classes"] == model(torch.zeros(1, *cfg["input_size"])).shape[1]
        assert cfg["ndeconv"] == {"norm": config["model"]["norm"], "recipe": config["name"]}


def test_a_finished_run_has_a_model_card_with_its_results(run_dir):
    text = (run_dir / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    results = json.loads((run_dir / "results.json").read_text())
    assert meta["library_name"] == "ndeconv" and "network-deconvolution" in meta["tags"]
    (entry,) = meta["model-index"]
    assert entry["results"][0]["metrics"][0]["value"] == round(100 * results["accuracy"], 2)
    assert f"| top-1 accuracy | {100 * results['accuracy']:.2f}% |" in text
    for row in read_metrics(run_dir / "metrics.csv"):
        assert f"| {row['epoch']} | {row['train_loss']:.4f} | {row['valid_loss']:.4f} |" in text
    recipe_block = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(recipe_block) == yaml.safe_load((run_dir / "config.yaml").read_text())


def _hub_snapshot(run_dir, cache, repo_id):
    """Lay ``run_dir`` out as huggingface_hub's cache does after a download of ``repo_id``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(run_dir, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("checkpoint.pth"))


def test_load_from_the_hub_cache_offline(run_dir, tmp_path):
    _hub_snapshot(run_dir, tmp_path / "cache", "someone/tiny-deconv")
    model = ndeconv.load("hf-hub:someone/tiny-deconv", cache_dir=tmp_path / "cache")
    local = ndeconv.load(run_dir)
    for (k, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(HubError, match="hf-hub:someone/missing: cannot get it"):
        ndeconv.load("hf-hub:someone/missing", cache_dir=tmp_path / "cache")


def test_push_without_a_reachable_hub_is_one_line(run_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ndeconv", "push", str(run_dir), "someone/tiny-deconv"],
                          capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: someone/tiny-deconv: cannot upload") and "Traceback" not in proc.stderr


def test_push_and_load_refuse_unfinished_runs(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "results.json").unlink()
    (partial / "model.safetensors").unlink()
    with pytest.raises(RunDirError, match="has not finished"):
        ndeconv.push(partial, "someone/x")
    with pytest.raises(RunDirError, match="incomplete run"):
        ndeconv.load(partial)
