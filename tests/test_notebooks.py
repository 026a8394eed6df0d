"""The notebooks in nbs/ pass ``nbdev-test`` (nbdev sets IN_TEST: smaller settings; ``#| slow`` cells skipped)
and are stored clean, with the outputs of a full-size run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.slow
def test_nbdev_test_runs_every_notebook():
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("IN_TEST", None)
    nbdev_test = Path(sys.executable).with_name("nbdev-test")
    proc = subprocess.run([str(nbdev_test), "nbs", "--n-workers", "1", "--do-print"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Success." in proc.stdout
    assert proc.stdout.count("- Completed") == len(NBS) == 4


@pytest.mark.parametrize("path", NBS, ids=[p.stem for p in NBS])
def test_notebook_is_stored_clean_with_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in code for o in c.get("outputs", [])]
    rich = [o for o in outputs if {"image/png", "text/html", "text/markdown"} & set(o.get("data", {}))]
    assert rich, "no stored table, plot or rendered docs"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert all(c.get("execution_count") is None for c in code), "not cleaned with nbdev-clean"
    assert path.stat().st_size < 1_000_000
