import os
import sys
import tempfile

# Keep test caches out of the user's home: set before `datasets` is imported anywhere.
_CACHE = tempfile.mkdtemp(prefix="ndeconv-test-cache-")
os.environ.setdefault("NDECONV_CACHE", os.path.join(_CACHE, "ndeconv"))
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_CACHE, "hf"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_parquet(tmp_path_factory):
    """A 4-class 16x16 RGB parquet dataset in the hub's layout (train-*.parquet, test-*.parquet)."""
    from tinydata import write_tiny_parquet

    return write_tiny_parquet(tmp_path_factory.mktemp("tiny-parquet"))


@pytest.fixture()
def tiny_recipe(tiny_parquet, tmp_path):
    """A recipe file for the tiny dataset: convnet3, 2 epochs."""
    from tinydata import write_tiny_recipe

    return write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet)


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory, tiny_parquet):
    """A finished 2-epoch deconvolution run of the tiny dataset, trained once through the CLI."""
    from typer.testing import CliRunner

    from ndeconv.cli import app
    from tinydata import write_tiny_recipe

    root = tmp_path_factory.mktemp("finished-run")
    recipe = write_tiny_recipe(root / "tiny.yaml", tiny_parquet, train={"epochs": 2})
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(root / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return root / "run"
