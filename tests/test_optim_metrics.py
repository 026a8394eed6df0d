"""Optimizers, learning-rate schedules and metrics a recipe can ask for, checked independently."""

import math

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.optimizer import Optimizer

from ndeconv.recipe import load_recipe
from ndeconv.train import fit_recipe
from ndeconv.tasks import top5
from learners import learner_for


def test_top5_against_an_independent_count():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(200, 100, generator=gen), torch.randint(0, 100, (200,), generator=gen)
    order = np.argsort(-logits.numpy(), axis=1)[:, :5]
    expected = np.mean([t in row for t, row in zip(targets.numpy(), order)])
    assert float(top5(logits, targets)) == pytest.approx(expected)
    assert 0 < expected < 1


def test_top5_is_reported_with_100_classes(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"data.num_classes": 100})
    learn, _ = learner_for(recipe)
    assert [m.name for m in learn.metrics] == ["accuracy", "top5"]


class RecordLR(Callback):
    def before_fit(self):
        self.lrs = []

    def after_batch(self):
        if self.training:
            self.lrs.append(self.opt.hypers[0]["lr"])


def _fit(tiny_recipe, **overrides):
    recipe = load_recipe(tiny_recipe, {"train.epochs": 2, **overrides})
    rec = RecordLR()
    learn, length = learner_for(recipe, cbs=[rec])
    fit_recipe(learn, recipe, length)
    return recipe, learn, rec.lrs


@pytest.mark.parametrize("schedule", ["cosine", "constant", "one_cycle"])
def test_learning_rate_schedules(tiny_recipe, schedule):
    recipe, learn, lrs = _fit(tiny_recipe, **{"optim.schedule": schedule})
    peak, n = recipe.optim.lr, len(lrs)
    assert n == 2 * len(learn.dls.train)
    if schedule == "constant":
        assert lrs == pytest.approx([peak] * n)
    elif schedule == "cosine":  # lr at step i (of n) is peak * (1 + cos(pi * i / n)) / 2
        assert lrs == pytest.approx([peak * (1 + math.cos(math.pi * i / n)) / 2 for i in range(n)])
    else:  # warm up to the peak over the first quarter, then anneal far below the start
        top = int(np.argmax(lrs))
        assert lrs[top] == pytest.approx(peak, rel=0.02) and 0.15 * n <= top <= 0.35 * n
        assert lrs[0] < peak / 10 and lrs[-1] < lrs[0] and all(a <= b for a, b in zip(lrs[:top], lrs[1:top + 1]))


def test_adamw_trains_with_decoupled_weight_decay(tiny_recipe):
    recipe, learn, _ = _fit(tiny_recipe, **{"optim.name": "adamw", "optim.lr": 0.003, "optim.schedule": "constant"})
    assert isinstance(learn.opt, Optimizer) and "sqr_avg" in learn.opt.state[learn.opt.all_params()[0][0]]
    steppers = [getattr(f, "func", f).__name__ for f in learn.opt.cbs]
    assert learn.opt.hypers[0]["wd"] == recipe.optim.weight_decay
    assert "weight_decay" in steppers and "l2_reg" not in steppers  # decoupled, unlike SGD's L2
    train_loss, valid_loss, accuracy = learn.recorder.values[-1]
    assert accuracy > 0.9
