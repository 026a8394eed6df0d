"""Training: recipes to fastai Learners on Accelerate, run directories, resume (the ``train`` extra)."""

try:
    import accelerate  # noqa: F401
    import fastai  # noqa: F401
except ModuleNotFoundError as e:
    raise ModuleNotFoundError(f"ndeconv.train needs the train extra ({e.name} not installed): "
                              "pip install 'ndeconv[train]'", name=e.name) from None

from .callbacks import AcceleratorCallback, RichProgressCallback, RunDirCallback
from .checkpoint import load_checkpoint, save_checkpoint
from .learner import build_learner, fit_recipe, make_accelerator
from .plan import RunPlan, plan_resume, plan_train
from .run import default_run_dir, execute, resume, train
from .tracking import TrackerCallback

__all__ = [
    "AcceleratorCallback", "RichProgressCallback", "RunDirCallback", "TrackerCallback", "load_checkpoint",
    "save_checkpoint", "build_learner", "fit_recipe", "make_accelerator", "default_run_dir", "resume", "train",
    "RunPlan", "plan_train", "plan_resume", "execute",
]
