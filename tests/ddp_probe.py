"""Run under `accelerate launch` by test_scale.py: train a recipe through `ndeconv.train.train`; every
rank also saves its final weights (an extra fastai callback), so the test can compare ranks."""

import sys
from pathlib import Path

from fastai.callback.core import Callback
from safetensors.torch import save_model

from ndeconv.recipe import load_recipe
from ndeconv.train import train
from ndeconv.train.learner import process_state


class SaveRankWeights(Callback):
    order = 100  # after the Accelerator callback has unwrapped the model

    def __init__(self, folder: Path):
        self.folder = folder

    def after_fit(self) -> None:
        save_model(self.learn.model, str(self.folder / f"rank{process_state().process_index}.safetensors"))


if __name__ == "__main__":
    recipe_file, out, weights_dir = sys.argv[1:4]
    train(load_recipe(recipe_file), out, progress=False, cbs=[SaveRankWeights(Path(weights_dir))])
