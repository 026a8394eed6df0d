"""Run under `accelerate launch` by test_scale.py: train a recipe through `ndeconv.train.train`; every
rank also saves its final weights (an extra fastai callback) and the example indices of every
training batch it drew, so the test can compare ranks."""

import sys
from pathlib import Path

from fastai.callback.core import Callback
import torch
from safetensors.torch import save_model

from ndeconv.data.loaders import TensorImageDL

from ndeconv.recipe import load_recipe
from ndeconv.train import train
from ndeconv.train.learner import process_state


TRAIN_BATCHES: list[list[int]] = []
_create_batch = TensorImageDL.create_batch


def _recording_create_batch(self: TensorImageDL, b: list[int]):
    if self.shuffle:  # the training loader
        TRAIN_BATCHES.append([int(i) for i in b])
    return _create_batch(self, b)


TensorImageDL.create_batch = _recording_create_batch


class SaveRankWeights(Callback):
    order = 100  # after the Accelerator callback has unwrapped the model

    def __init__(self, folder: Path):
        self.folder = folder

    def after_fit(self) -> None:
        rank = process_state().process_index
        save_model(self.learn.model, str(self.folder / f"rank{rank}.safetensors"))
        torch.save(TRAIN_BATCHES, self.folder / f"rank{rank}-batches.pt")


if __name__ == "__main__":
    recipe_file, out, weights_dir = sys.argv[1:4]
    train(load_recipe(recipe_file), out, progress=False, cbs=[SaveRankWeights(Path(weights_dir))])
