"""Dataset sources: a parquet directory, an image folder, a Hugging Face hub id, or a bundled set.

Everything is loaded through ``datasets`` and comes back as two ``datasets.Dataset`` splits with
an image column and an integer label column. Problems (missing path, split or column) are
:class:`DataError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import DataError, first_line
from ..recipe import DataSpec

__all__ = ["Splits", "load_splits", "load_path", "load_hub", "check_splits", "digits_dataset"]


@dataclass
class Splits:
    """The training and validation splits of a source and how to read them."""

    train: datasets.Dataset
    valid: datasets.Dataset
    image_column: str
    label_column: str
    key: str  # identifies the source's content, for caches
    class_names: list[str] | None = None  # the labels' names, where the source has them


def digits_dataset() -> datasets.DatasetDict:
    """scikit-learn's bundled 8x8 handwritten digits as a ``DatasetDict`` (80/20 split, fixed seed).

    Pixel values 0..16 are scaled to 0..255 uint8 grey images. No network needed.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    n_valid = len(images) // 5
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def split(idx: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(images[i], mode="L") for i in idx], "label": digits.target[idx].tolist()},
            features=features)

    return datasets.DatasetDict(train=split(order[n_valid:]), test=split(order[:n_valid]))


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha1()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_path(path: Path, train_split: str = "train", valid_split: str = "test", image_column: str = "img",
              label_column: str = "label", source: str = "data.path") -> tuple[datasets.DatasetDict, str, str, str]:
    """A parquet directory (``train*.parquet``...) or an image folder (``train/<class>/*.png``...) as a
    ``DatasetDict``, with its image and label columns and a key of its content (for caches).

    Parquet files keep the given column names; an image folder has ``image`` and ``label``.
    ``source`` names the setting in errors.
    """
    if not path.exists():
        raise DataError(f"{source}: {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{source}: {path} is not a directory (expected parquet files or an image folder)")
    files: dict[str, list[str]] = {}
    for split in (train_split, valid_split):
        found = sorted(path.glob(f"{split}*.parquet")) or sorted(path.glob(f"*/{split}*.parquet"))
        if found:
            files[split] = [str(f) for f in found]
    if files:
        if len(files) < 2:
            missing = next(s for s in (train_split, valid_split) if s not in files)
            raise DataError(f"{source}: {path} has no {missing}*.parquet files")
        all_files = [Path(f) for fs in files.values() for f in fs]
        try:
            ds = datasets.load_dataset("parquet", data_files=files)
        except Exception as e:  # an empty or damaged file: datasets raises several types
            empty = re.search(r'Instruction "([^"]+)" corresponds to no data', str(e))
            if empty:
                raise DataError(f"{source}: split '{empty.group(1)}' of {path} is empty (no rows)") from None
            first = first_line(e, 200)
            raise DataError(f"{source}: cannot read the parquet files of {path} ({first})") from None
        return ds, image_column, label_column, f"parquet-{_fingerprint(all_files)}"
    if (path / train_split).is_dir():
        images = [f for f in path.rglob("*") if f.is_file()]
        try:
            ds = datasets.load_dataset("imagefolder", data_dir=str(path))
        except Exception as e:  # datasets raises several types for unreadable folders
            raise DataError(f"{source}: cannot read image folder {path}: {e}") from None
        return ds, "image", "label", f"folder-{_fingerprint(images)}"
    raise DataError(f"{source}: {path} has no {train_split}*.parquet files and no {train_split}/ image folder")


def load_hub(spec: DataSpec, source: str = "data") -> datasets.DatasetDict:
    """``datasets.load_dataset(spec.hub_id)``; any failure (offline, unknown id, gated) is one line."""
    try:
        return datasets.load_dataset(spec.hub_id)
    except Exception as e:  # offline, unknown id, gated: all end here
        first = first_line(e)
        raise DataError(f"{source}.hub_id: cannot load '{spec.hub_id}' ({first}); "
                        "set data.path to a local copy") from None


def check_splits(ds: datasets.DatasetDict, spec: DataSpec, columns: tuple[str, ...], origin: str) -> None:
    """The recipe's training and validation splits exist in ``ds`` and have ``columns``."""
    for split in (spec.train_split, spec.valid_split):
        if split not in ds:
            raise DataError(f"{origin}: no split '{split}' (splits: {', '.join(ds)})")
        if len(ds[split]) == 0:
            raise DataError(f"{origin}: split '{split}' is empty (no rows)")
        found = ds[split].column_names
        for column in columns:
            if column not in found:
                raise DataError(f"{origin}: split '{split}' has no column '{column}' (columns: {', '.join(found)})")


def load_splits(spec: DataSpec, source: str = "data") -> Splits:
    """Load the recipe's training and validation splits, checking splits and columns."""
    if spec.path is not None:
        ds, image_col, label_col, key = load_path(Path(spec.path).expanduser(), spec.train_split, spec.valid_split,
                                                  spec.image_column, spec.label_column, f"{source}.path")
        origin = spec.path
    elif spec.builtin == "digits":
        ds, image_col, label_col, key = digits_dataset(), "image", "label", "builtin-digits-v1"
        origin = "builtin digits"
    else:
        ds = load_hub(spec, source)
        image_col, label_col, key, origin = spec.image_column, spec.label_column, f"hub-{spec.hub_id}", spec.hub_id
    check_splits(ds, spec, (image_col, label_col), origin)
    train, valid = ds[spec.train_split], ds[spec.valid_split]
    names = getattr(train.features.get(label_col), "names", None)
    if names is not None and spec.classes is not None:
        names = [names[c] for c in spec.classes] if max(spec.classes) < len(names) else None
    if spec.classes is not None:
        train, valid = (select_classes(split, label_col, spec.classes) for split in (train, valid))
        key = f"{key}:classes={','.join(map(str, spec.classes))}"
    key = hashlib.sha1(f"{key}:{spec.train_split}:{spec.valid_split}:{image_col}:{label_col}".encode()).hexdigest()[:16]
    return Splits(train, valid, image_col, label_col, key, names)


def select_classes(split: datasets.Dataset, label_column: str, classes: list[int]) -> datasets.Dataset:
    """The examples of ``classes`` only, their labels renumbered 0, 1, ... in the order of ``classes``."""
    number = {label: i for i, label in enumerate(classes)}
    kept = split.filter(lambda label: label in number, input_columns=[label_column])
    relabelled = kept.cast_column(label_column, datasets.Value("int64"))
    return relabelled.map(lambda label: {label_column: number[label]}, input_columns=[label_column])
