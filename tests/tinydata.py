"""A tiny learnable image dataset written by the tests themselves (nothing is downloaded).

Class k of 4 has a bright 8x8 square of colour k (red, green, blue, white) at a random place on a
noisy dark background, so a small CNN with global pooling separates the classes within a couple
of epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

N_TRAIN, N_TEST, SIZE, CLASSES = 256, 64, 16, 4


def tiny_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=bool)
    for i, k in enumerate(labels):
        top, left = rng.integers(0, SIZE - 7, size=2)
        square = images[i, top:top + 8, left:left + 8, :]
        square[:, :, colours[k]] = rng.integers(150, 256, dtype=np.uint8)
    return images, labels


def write_tiny_parquet(root: Path, image_column: str = "img") -> Path:
    import datasets
    from PIL import Image

    features = datasets.Features({image_column: datasets.Image(), "label": datasets.ClassLabel(num_classes=CLASSES)})
    for split, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
        images, labels = tiny_arrays(n, seed)
        ds = datasets.Dataset.from_dict(
            {image_column: [Image.fromarray(a) for a in images], "label": labels.tolist()}, features=features)
        ds.to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    return root


def tiny_recipe_dict(data_path: Path) -> dict:
    return {
        "name": "tiny",
        "data": {"path": str(data_path), "image_column": "img", "label_column": "label", "num_classes": CLASSES,
                 "image_size": SIZE, "channels": 3, "mean": [0.3, 0.3, 0.3], "std": [0.3, 0.3, 0.3]},
        "model": {"name": "convnet3", "norm": "deconv",
                  "deconv": {"block": 16, "block_fc": 64, "sampling_stride": 1, "n_iter": 5}},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
        "train": {"epochs": 2, "batch_size": 32, "seed": 0},
        "augment": {"crop_padding": 1, "flip": True},
    }


def write_tiny_recipe(path: Path, data_path: Path, **section_overrides: dict) -> Path:
    raw = tiny_recipe_dict(data_path)
    for section, values in section_overrides.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
