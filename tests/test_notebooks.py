"""The notebooks in nbs/ execute top to bottom (small settings: NDECONV_NB_SMALL=1)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NBS = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NBS, ids=[p.stem for p in NBS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("NDECONV_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert len(NBS) == 3
