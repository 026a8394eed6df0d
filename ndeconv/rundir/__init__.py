"""The run directory: what a training run leaves on disk (file names, the order they are written,
whether a run finished), and a run's recipe and model read back from it.

Above the recipe, the models and the conversion; below ``train/``, ``compare``, ``export``,
``hub`` and ``viz``, which all reach a run's files through it. It imports neither fastai nor
Accelerate, so loading a trained model (``ndeconv.load``) needs neither.
"""

from .layout import (CARD, CHECKPOINT, CONFIG, LAUNCH, LOCAL_ONLY, LOCK, LOG_DIR, METRICS, RESULTS, WEIGHTS,
                     WRITING_ORDER, RunResults, is_finished, load_run_recipe, read_metrics, read_results,
                     rows_to_csv)
from .model import build_model, load_pretrained, load_run_model, load_trained, read_pretrained
from .source import HF_PREFIX, resolve_run_dir

__all__ = [
    "CARD", "CHECKPOINT", "CONFIG", "LAUNCH", "LOCAL_ONLY", "LOCK", "LOG_DIR", "METRICS", "RESULTS", "WEIGHTS",
    "WRITING_ORDER", "RunResults", "is_finished", "load_run_recipe", "read_metrics", "read_results", "rows_to_csv",
    "build_model", "load_run_model", "load_trained", "read_pretrained", "load_pretrained",
    "HF_PREFIX", "resolve_run_dir",
]
