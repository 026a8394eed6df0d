"""The lean core install: without the ``train`` extra the layers, the conversion, ``fuse``, ``load``
and export work, and the command line says in one line what to install.

The extra's modules are hidden from child processes (``sys.modules[name] = None`` in a
``sitecustomize``: an import fails and ``importlib.util.find_spec`` finds nothing, as when they are
not installed).
"""

import os
import subprocess
import sys

import pytest

from _ndeconv_entry import TRAIN_EXTRA

CORE = f"""
import sys, torch, timm, ndeconv
from ndeconv.export import export_run
model = timm.create_model("resnet18", num_classes=10)
ndeconv.deconvolve(model)
model.eval()
x = torch.randn(2, 3, 32, 32)
fused = ndeconv.fuse(model)
assert torch.allclose(fused(x), model(x), atol=1e-4)
run = ndeconv.load(sys.argv[1])
assert run.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 4)
path, _ = export_run(sys.argv[1], "safetensors", sys.argv[2])
assert path.is_file()
loaded = [name for name in {TRAIN_EXTRA!r} if sys.modules.get(name) is not None]
assert not loaded, loaded
print("core ok")
"""


@pytest.fixture()
def without_train_extra(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nfor name in {TRAIN_EXTRA!r}:\n    sys.modules[name] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_the_core_works_without_the_train_extra(without_train_extra, finished_tiny_run, tmp_path):
    proc = subprocess.run([sys.executable, "-c", CORE, str(finished_tiny_run), str(tmp_path / "m.safetensors")],
                          env=without_train_extra, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "core ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("command", [["-m", "ndeconv", "train"], ["-c", "import _ndeconv_entry; _ndeconv_entry.main()"]])
def test_the_command_line_without_the_train_extra_names_the_install(without_train_extra, command):
    proc = subprocess.run([sys.executable, *command], env=without_train_extra, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: the command line needs the train extra") and "pip install 'ndeconv[train]'" \
        in lines[0] and "fastai" in lines[0]


def test_the_trainer_api_without_the_train_extra_names_the_install(without_train_extra):
    proc = subprocess.run([sys.executable, "-c", "import ndeconv.train"], env=without_train_extra,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "ModuleNotFoundError: ndeconv.train needs the train extra" in proc.stderr
