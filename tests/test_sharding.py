"""``ShardedDL``: every process takes its own shard of the same seeded epoch order."""

import pytest
import torch

from ndeconv.data.loaders import TensorImageDL


def _ranks(n: int, world: int, seed: int = 3, bs: int = 2) -> list[TensorImageDL]:
    images, labels = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)
    dls = [TensorImageDL(images, labels, bs=bs, shuffle=True).shard(r, world) for r in range(world)]
    for dl in dls:
        dl.rng.seed(seed)  # every rank seeds alike, as make_dataloaders does
    return dls


def _epochs(dl: TensorImageDL, epochs: int) -> list[list[int]]:
    """The examples (labels are indices) of each epoch's batches, iterated as training does."""
    return [[int(y) for _, yb in dl for y in yb] for _ in range(epochs)]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_are_disjoint_cover_the_epoch_and_have_equal_length(world):
    n = 12 * world
    shards = [_epochs(dl, 3) for dl in _ranks(n, world)]
    for epoch in range(3):
        parts = [s[epoch] for s in shards]
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == n // world
        seen = [i for p in parts for i in p]
        assert sorted(seen) == list(range(n))  # disjoint and covering: every example exactly once
    assert shards[0][0] != shards[0][1] != shards[0][2]  # a new order every epoch


def test_uneven_epoch_is_padded_so_shards_stay_equal():
    n, world = 11, 3
    parts = [_epochs(dl, 1)[0] for dl in _ranks(n, world)]
    assert [len(p) for p in parts] == [4, 4, 4]
    seen = [i for p in parts for i in p]
    assert set(seen) == set(range(n)) and len(seen) - len(set(seen)) == 1  # one example wraps around
    assert all(len(dl) == 2 for dl in _ranks(n, world))  # 4 examples per rank in batches of 2


def test_one_process_sees_the_whole_shuffled_epoch():
    (dl,) = _ranks(10, 1)
    order = _epochs(dl, 1)[0]
    assert sorted(order) == list(range(10)) and order != list(range(10))


def test_shards_depend_on_the_seed():
    a = [_epochs(dl, 1)[0] for dl in _ranks(20, 2, seed=0)]
    b = [_epochs(dl, 1)[0] for dl in _ranks(20, 2, seed=1)]
    assert a != b
