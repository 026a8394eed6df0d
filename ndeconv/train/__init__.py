"""Training: recipes to fastai Learners on Accelerate, run directories, resume.

Floor: above the run directory (``ndeconv.rundir``), the recipe, tasks and data; below
``compare`` and the command line. The only floor that imports fastai and Accelerate at load.
"""

from .callbacks import AcceleratorCallback, RichProgressCallback, RunDirCallback
from .checkpoint import load_checkpoint, save_checkpoint
from .learner import build_learner, fit_recipe, make_accelerator
from .run import default_run_dir, resume, train
from .tracking import TrackerCallback

__all__ = [
    "AcceleratorCallback", "RichProgressCallback", "RunDirCallback", "TrackerCallback", "load_checkpoint",
    "save_checkpoint", "build_learner", "fit_recipe", "make_accelerator", "default_run_dir", "resume", "train",
]
