"""Training: recipes to fastai Learners on Accelerate, run directories, resume (the ``train`` extra).

The names below are imported from their modules when first used, so that planning a run
(:mod:`.plan`) does not load fastai: the command line plans a multi-process run, then launches it.
"""

import importlib
import importlib.util

_MISSING = [name for name in ("accelerate", "fastai") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise ModuleNotFoundError(f"ndeconv.train needs the train extra ({_MISSING[0]} not installed): "
                              "pip install 'ndeconv[train]'", name=_MISSING[0])

#: Each public name and the module that holds it.
_HOMES = {
    "AcceleratorCallback": "callbacks", "RichProgressCallback": "callbacks", "RunDirCallback": "callbacks",
    "TrackerCallback": "tracking", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "build_learner": "learner", "fit_recipe": "learner", "make_accelerator": "learner", "default_run_dir": "plan",
    "resume": "run", "train": "run", "execute": "run", "RunPlan": "plan", "plan_train": "plan", "plan_resume": "plan",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'ndeconv.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too, for completion in a notebook, as when they were imported eagerly."""
    return sorted({*globals(), *__all__})
