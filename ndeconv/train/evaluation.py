"""Validation with test-time augmentation (:mod:`ndeconv.tta`), and the accuracy without it beside."""

from __future__ import annotations

from fastai.callback.core import Callback
from fastai.learner import Metric
from fastai.metrics import accuracy

from ..tta import mirror_translate_logits

__all__ = ["TTACallback", "AccuracyWithoutTTA"]


class TTACallback(Callback):
    """In validation, the Learner's predictions become :func:`~ndeconv.tta.mirror_translate_logits`
    (loss and metrics see them); the plain ones stay as ``learn.plain_pred``."""

    order = 15  # after the Accelerator callback has cast the predictions, inside its autocast

    def after_pred(self) -> None:
        if self.training:
            return
        self.learn.plain_pred = self.pred
        self.learn.pred = mirror_translate_logits(self.model, self.xb[0], self.pred).float()


class AccuracyWithoutTTA(Metric):
    """Top-1 accuracy of the plain predictions of a run validated with :class:`TTACallback`."""

    def reset(self) -> None:
        self.correct, self.count = 0.0, 0

    def accumulate(self, learn) -> None:
        preds = getattr(learn, "plain_pred", learn.pred)
        n = len(learn.yb[0])
        self.correct += float(accuracy(preds, *learn.yb)) * n
        self.count += n

    @property
    def value(self) -> float | None:
        return self.correct / self.count if self.count else None

    @property
    def name(self) -> str:
        return "accuracy_no_tta"
