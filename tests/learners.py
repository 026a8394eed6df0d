"""A recipe's Learner outside a run (what ``ndeconv.train.run`` builds), for the tests that drive one directly."""

from ndeconv.data import make_dataloaders
from ndeconv.rundir import build_model
from ndeconv.tasks import resolve_task
from ndeconv.train import build_learner, make_accelerator
from ndeconv.train.length import run_length


def learner_for(recipe, model=None, accelerator=None, cbs=None, features=True):
    """``(learn, length)``: the recipe's Learner on CPU, with its training features unless ``features`` is False."""
    dls = make_dataloaders(recipe, device="cpu")
    length = run_length(recipe.train, len(dls.train)) if features else None
    learn = build_learner(recipe, dls, model if model is not None else build_model(recipe),
                          accelerator or make_accelerator("fp32", cpu=True), resolve_task(recipe), length, cbs=cbs)
    return learn, length
