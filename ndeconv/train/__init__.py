"""Training: recipes to fastai Learners on Accelerate, run directories, resume."""

from .callbacks import AcceleratorCallback, RichProgressCallback, RunDirCallback
from .checkpoint import load_checkpoint, read_metrics, save_checkpoint
from .learner import build_learner, build_model, fit_recipe, make_accelerator
from .run import CONFIG, RESULTS, WEIGHTS, default_run_dir, load_run_recipe, resume, train
from .tracking import TrackerCallback

__all__ = [
    "AcceleratorCallback", "RichProgressCallback", "RunDirCallback", "TrackerCallback", "load_checkpoint",
    "read_metrics", "save_checkpoint", "build_learner", "build_model",
    "fit_recipe", "make_accelerator", "CONFIG", "RESULTS", "WEIGHTS", "default_run_dir", "load_run_recipe",
    "resume", "train",
]
