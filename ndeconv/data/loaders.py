"""fastai ``DataLoaders`` for a recipe: uint8 batches, augmented on the device by :class:`BatchTransform`."""

from __future__ import annotations

import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader

from ..recipe import Recipe
from .augment import BatchTransform
from .sources import Splits, load_splits
from .tensors import DecodedImages, cached_split

__all__ = ["ShardedDL", "TensorImageDL", "ImageDL", "make_dataloaders", "subset_indices", "sample_images",
           "normalised_training_images", "MIN_VALID_BATCH"]

#: Validation batches hold twice the training batch, and at least this many images: evaluation does
#: not depend on the batch (every norm uses fixed statistics), so a training batch of 2 need not make
#: validation take thousands of steps.
MIN_VALID_BATCH = 64


def subset_indices(total: int, n: int) -> torch.Tensor:
    """The ``n`` training examples that ``train.limit_train = n`` keeps, in increasing order.

    A fixed shuffle (seed 0, independent of the run's seed) then the first ``n``: the same subset
    every run, nested as ``n`` grows, and representative even when the source is sorted by
    class (as some parquet exports of CIFAR-10 are).
    """
    order = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    return order[: min(n, total)].sort().values


class ShardedDL(DataLoader):
    """A fastai DataLoader that can serve one shard of its epoch to each of several processes.

    Every process shuffles with the same seeded generator, so they agree on the epoch's order
    without communicating; process ``rank`` takes every ``world``-th index (the order padded by
    wrapping around, so all shards have the same length, as ``DistributedSampler`` does).

    With a ``flip_mask`` (one boolean per example, drawn once) it serves example ``i`` mirrored
    when ``flip_mask[i]`` differs from "``epoch`` is odd": each image flipped at random once, then
    the whole set flipped every other epoch (the training callbacks set ``epoch``).
    """

    n_inp = 1
    rank, world = 0, 1
    flip_mask: torch.Tensor | None = None
    epoch = 0

    def mirrored(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``images`` of the examples ``idx``, each mirrored if the alternating flip says so this epoch."""
        if self.flip_mask is None:
            return images
        flip = self.flip_mask[idx] ^ bool(self.epoch % 2)
        return torch.where(flip.view(-1, *[1] * (images.dim() - 1)), images.flip(-1), images)

    def shard(self, rank: int, world: int) -> ShardedDL:
        self.rank, self.world = rank, world
        return self

    def get_idxs(self) -> list:
        idxs = list(super().get_idxs())
        if self.world == 1:
            return idxs
        per = -(-len(idxs) // self.world)
        idxs += idxs[: per * self.world - len(idxs)]
        return idxs[self.rank:: self.world]

    def batches_per_process(self, world: int) -> int:
        """Batches each of ``world`` processes takes per epoch (the length of one shard)."""
        if world == 1:
            return super().__len__()
        per = -(-self.n // world)
        return per // self.bs + (0 if self.drop_last or per % self.bs == 0 else 1)

    def __len__(self) -> int:
        return self.batches_per_process(self.world)


class TensorImageDL(ShardedDL):
    """Batches cut from in-memory uint8 tensors by index: no per-item Python work."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **kwargs):
        self.images, self.labels = images, labels
        super().__init__(dataset=range(len(labels)), **kwargs)

    def create_item(self, s: int) -> int:
        return s

    def create_batch(self, b: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(b, dtype=torch.long)
        return self.mirrored(self.images[idx], idx), self.labels[idx]

    def new(self, dataset=None, cls=None, **kwargs) -> TensorImageDL:
        kwargs.setdefault("images", self.images)
        kwargs.setdefault("labels", self.labels)
        return super().new(dataset=dataset, cls=cls, **kwargs)


class ImageDL(ShardedDL):
    """Batches of images decoded on the fly (optionally in worker processes)."""

    def create_item(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().create_item(s)
        return self.mirrored(image.unsqueeze(0), torch.tensor([s]))[0], label


def sample_images(dl: ShardedDL, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` training examples of ``dl`` drawn at random (all, if it has fewer), as stored: uint8, not
    augmented, not normalised."""
    total = len(dl.dataset)
    idx = torch.randperm(total, generator=generator)[: min(n, total)].sort().values
    if isinstance(dl, TensorImageDL):
        return dl.images[idx]
    return torch.stack([dl.dataset[int(i)][0] for i in idx])


def normalised_training_images(dls: DataLoaders, n: int, seed: int) -> torch.Tensor:
    """``n`` training images drawn at random (seeded), normalised as validation normalises them (not
    augmented): what a whitening stem is fitted on, or a conversion calibrated on."""
    images = sample_images(dls.train, n, torch.Generator().manual_seed(seed))
    labels = torch.zeros(len(images), dtype=torch.long)
    return dls.valid.after_batch((images.to(dls.device or "cpu"), labels))[0]


def _transforms(recipe: Recipe) -> tuple[BatchTransform, BatchTransform]:
    d, a = recipe.data, recipe.augment
    train = BatchTransform(d.image_size, d.mean, d.std, train=True, crop_padding=a.crop_padding,
                           flip=a.flip is True, random_resized_crop=a.random_resized_crop, scale=a.scale,
                           seed=recipe.train.seed, padding_mode=a.padding_mode)
    valid = BatchTransform(d.image_size, d.mean, d.std, train=False)
    return train, valid


def make_dataloaders(recipe: Recipe, device: torch.device | str | None = None,
                     splits: Splits | None = None) -> DataLoaders:
    """Training (shuffled, augmented, last partial batch dropped) and validation loaders for ``recipe``.

    ``data.cache`` decodes each split once into an on-disk uint8 cache; otherwise images are
    decoded per item in ``train.num_workers`` workers. ``train.limit_train`` keeps a fixed subset
    of N training examples (:func:`subset_indices`).
    """
    d, t = recipe.data, recipe.train
    splits = splits or load_splits(d)
    size = d.resize or d.image_size
    keep = None
    if t.limit_train is not None and t.limit_train < len(splits.train):
        keep = subset_indices(len(splits.train), t.limit_train)
    train_tfm, valid_tfm = _transforms(recipe)
    common = dict(device=device)
    valid_bs = max(2 * t.batch_size, MIN_VALID_BATCH)
    if d.cache:  # a subset is decoded and cached on its own: train.limit_train 200 decodes 200 images
        train_ds, train_key = splits.train, splits.key + "-train"
        if keep is not None:
            train_ds, train_key = splits.train.select(keep.tolist()), f"{train_key}-subset{len(keep)}"
        tx, ty = cached_split(train_ds, train_key, splits.image_column, splits.label_column, d.channels, size,
                              d.num_classes, "training split")
        vx, vy = cached_split(splits.valid, splits.key + "-valid", splits.image_column, splits.label_column,
                              d.channels, size, d.num_classes, "validation split")
        train = TensorImageDL(tx, ty, bs=t.batch_size, shuffle=True, drop_last=len(ty) > t.batch_size,
                              after_batch=train_tfm, **common)
        valid = TensorImageDL(vx, vy, bs=valid_bs, after_batch=valid_tfm, **common)
    else:
        def decoded(ds, where):
            return DecodedImages(ds, splits.image_column, splits.label_column, d.channels, size, d.num_classes, where)

        train_ds = splits.train if keep is None else splits.train.select(keep.tolist())
        train = ImageDL(decoded(train_ds, "training split"), bs=t.batch_size, shuffle=True, drop_last=True,
                        num_workers=t.num_workers, after_batch=train_tfm, **common)
        valid = ImageDL(decoded(splits.valid, "validation split"), bs=valid_bs, num_workers=t.num_workers,
                        after_batch=valid_tfm, **common)
    train.rng.seed(t.seed)
    if recipe.augment.flip == "alternate":
        train.flip_mask = torch.rand(len(train.dataset), generator=torch.Generator().manual_seed(t.seed)) < 0.5
    dls = DataLoaders(train, valid, device=device)
    dls.class_names = splits.class_names
    return dls
