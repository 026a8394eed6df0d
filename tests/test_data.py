"""Data: sources through `datasets`, the uint8 cache, and augmentation doing what the recipe says."""

import numpy as np
import pytest
import torch
from PIL import Image

from ndeconv.data import (BatchTransform, cache_dir, cached_split, center_crop, decode_image, digits_dataset,
                          load_splits, make_dataloaders, normalize, random_crop, random_flip, random_resized_crop)
from ndeconv.data.loaders import subset_indices
from ndeconv.errors import DataError
from ndeconv.recipe import DataSpec, load_recipe
from tinydata import CLASSES, N_TEST, N_TRAIN, SIZE, tiny_arrays


def _images(n=6, c=3, h=10, w=12):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_cuts_a_window_of_the_zero_padded_image():
    x, p = _images(), 3
    out = random_crop(x, p, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(padded[i, :, dy:dy + 10, dx:dx + 12], out[i])]
        assert windows, f"image {i} is not a window of its padded original"
        offsets.add(windows[0])
    assert len(offsets) > 1  # not the same shift for the whole batch
    assert torch.equal(random_crop(x, p, _gen(1)), random_crop(x, p, _gen(1)))
    assert not torch.equal(random_crop(x, p, _gen(1)), random_crop(x, p, _gen(2)))
    assert torch.equal(random_crop(x, 0, _gen()), x)


def test_random_flip_mirrors_some_images_and_keeps_the_rest():
    x = _images(n=32)
    out = random_flip(x, _gen())
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(32)]
    kept = [torch.equal(out[i], x[i]) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 < sum(flipped) < 28
    assert torch.equal(random_flip(x, _gen(), p=1.0), x.flip(-1))


def test_random_resized_crop_full_box_is_the_identity_and_sizes_are_right():
    x = _images(h=16, w=16).float()
    same = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=_gen())
    torch.testing.assert_close(same, x, atol=1e-3, rtol=0)  # values 0..255 in float32
    out = random_resized_crop(x, 8, scale=(0.1, 0.5), generator=_gen())
    assert out.shape == (6, 3, 8, 8)
    assert out.min() >= x.min() - 1e-4 and out.max() <= x.max() + 1e-4
    assert not torch.allclose(out, random_resized_crop(x, 8, scale=(0.1, 0.5), generator=_gen(5)))


def test_normalize_matches_float64_and_center_crop_takes_the_middle():
    x = _images()
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])
    ref = (x.double() / 255 - mean.double().view(1, 3, 1, 1)) / std.double().view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, mean, std).double(), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(center_crop(x, 8), x[..., 1:9, 2:10])


def test_batch_transform_train_and_valid():
    x, y = _images(n=16, h=16, w=16), torch.arange(16)
    kw = dict(size=16, mean=[0.5] * 3, std=[0.25] * 3)
    valid = BatchTransform(train=False, **kw)
    vx, vy = valid((x, y))
    assert vy is y and vx.dtype == torch.float32
    torch.testing.assert_close(vx, (x.float() / 255 - 0.5) / 0.25)
    train_a = BatchTransform(train=True, crop_padding=2, flip=True, seed=3, **kw)
    train_b = BatchTransform(train=True, crop_padding=2, flip=True, seed=3, **kw)
    ax, _ = train_a((x, y))
    assert ax.shape == (16, 3, 16, 16)
    assert torch.equal(ax, train_b((x, y))[0])  # same seed, same augmentation
    assert not torch.equal(ax, vx)
    assert ax.min() >= (0 - 0.5) / 0.25 - 1e-6 and ax.max() <= (1 - 0.5) / 0.25 + 1e-6
    rrc = BatchTransform(train=True, random_resized_crop=True, scale=(0.3, 1.0), **{**kw, "size": 8})
    assert rrc((x, y))[0].shape == (16, 3, 8, 8)


def test_decode_image_resizes_shorter_side_and_centre_crops():
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 255  # the middle half is white
    out = decode_image(Image.fromarray(wide), channels=3, size=10)
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    assert out.min() > 200  # the centre crop is the white middle
    grey = decode_image(wide, channels=1, size=20)
    assert grey.shape == (1, 20, 20)


def test_parquet_source_and_cache(tiny_parquet):
    spec = DataSpec(num_classes=CLASSES, image_size=SIZE, mean=[0.3] * 3, std=[0.3] * 3, path=str(tiny_parquet),
                    image_column="img")
    splits = load_splits(spec)
    assert (len(splits.train), len(splits.valid)) == (N_TRAIN, N_TEST)
    images, labels = cached_split(splits.train, splits.key + "-probe", "img", "label", 3, SIZE, CLASSES)
    expected, expected_labels = tiny_arrays(N_TRAIN, 0)
    assert torch.equal(images, torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert torch.equal(labels, torch.from_numpy(expected_labels))
    files = list(cache_dir().glob(f"*{splits.key}-probe-*.pt"))
    assert len(files) == 1
    again = cached_split(splits.train, splits.key + "-probe", "img", "label", 3, SIZE, CLASSES)
    assert torch.equal(again[0], images)


def test_image_folder_source(tmp_path):
    for split, n in (("train", 8), ("test", 4)):
        images, labels = tiny_arrays(n, 0)
        for i, (a, k) in enumerate(zip(images, labels)):
            folder = tmp_path / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(folder / f"{i}.png")
    spec = DataSpec(num_classes=CLASSES, image_size=SIZE, mean=[0.3] * 3, std=[0.3] * 3, path=str(tmp_path),
                    image_column="img")  # an image folder always has image/label columns
    splits = load_splits(spec)
    assert (len(splits.train), len(splits.valid), splits.image_column) == (8, 4, "image")


@pytest.mark.parametrize("change, message", [
    (dict(path="/nonexistent/data"), "does not exist"),
    (dict(image_column="picture"), "has no column 'picture' (columns: img, label)"),
    (dict(valid_split="validation"), "has no validation*.parquet files"),
])
def test_bad_sources_are_one_line_data_errors(tiny_parquet, change, message):
    spec = dict(num_classes=CLASSES, image_size=SIZE, mean=[0.3] * 3, std=[0.3] * 3, path=str(tiny_parquet),
                image_column="img")
    with pytest.raises(DataError) as info:
        load_splits(DataSpec(**{**spec, **change}))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_labels_outside_num_classes_are_rejected(tiny_parquet):
    spec = DataSpec(num_classes=2, image_size=SIZE, mean=[0.3] * 3, std=[0.3] * 3, path=str(tiny_parquet),
                    image_column="img")
    splits = load_splits(spec)
    with pytest.raises(DataError, match="outside 0..1"):
        cached_split(splits.valid, "labels-check", "img", "label", 3, SIZE, 2)


def test_limit_train_subset_is_fixed_nested_and_representative_of_sorted_data():
    small, large = subset_indices(400, 40), subset_indices(400, 100)
    assert torch.equal(small, subset_indices(400, 40))  # the same subset every time
    assert len(set(small.tolist())) == 40 and set(small.tolist()) <= set(large.tolist())
    sorted_labels = torch.arange(400) // 100  # a source sorted by class, 4 classes
    assert set(sorted_labels[small].tolist()) == {0, 1, 2, 3}
    assert torch.equal(subset_indices(10, 50), torch.arange(10))


def test_digits_builtin_and_limit_train():
    ds = digits_dataset()
    assert (len(ds["train"]), len(ds["test"])) == (1438, 359)
    recipe = load_recipe("digits", {"train.limit_train": 100, "train.batch_size": 100})
    dls = make_dataloaders(recipe, device="cpu")
    assert dls.train.n == 100
    labels = torch.tensor(list(ds["train"]["label"]))
    assert torch.equal(dls.train.labels, labels[subset_indices(len(labels), 100)])
    xb, yb = dls.valid.one_batch()
    assert xb.shape == (200, 1, 8, 8) and xb.dtype == torch.float32
    assert abs(float(xb.mean())) < 0.3 and 0.7 < float(xb.std()) < 1.3  # the recipe's stats normalise it


def test_limit_train_decodes_and_caches_only_its_subset(tiny_parquet):
    from tinydata import tiny_recipe_dict

    from ndeconv.recipe import parse_recipe

    raw = tiny_recipe_dict(tiny_parquet)
    raw["train"]["limit_train"] = 40
    recipe = parse_recipe(raw)
    splits = load_splits(recipe.data)
    before = set(cache_dir().glob(f"*{splits.key}-train*.pt"))
    dls = make_dataloaders(recipe, device="cpu", splits=splits)
    (new,) = set(cache_dir().glob(f"*{splits.key}-train*.pt")) - before
    assert torch.load(new, weights_only=True)["images"].shape[0] == 40  # not all N_TRAIN images
    images, labels = tiny_arrays(N_TRAIN, 0)
    keep = subset_indices(N_TRAIN, 40)
    assert torch.equal(dls.train.images, torch.from_numpy(images).permute(0, 3, 1, 2)[keep])
    assert torch.equal(dls.train.labels, torch.from_numpy(labels)[keep])


def _batches(dl):
    return [(x.clone(), y.clone()) for x, y in dl]


def test_uncached_path_with_resize_and_workers_gives_the_cached_images(tiny_parquet):
    from tinydata import tiny_recipe_dict

    from ndeconv.recipe import parse_recipe

    raw = tiny_recipe_dict(tiny_parquet)
    raw["data"].update(resize=20)  # decoded at 20x20, centre-cropped to 16x16 in validation
    cached = make_dataloaders(parse_recipe(raw), device="cpu")
    raw["data"]["cache"], raw["train"]["num_workers"] = False, 2
    uncached = make_dataloaders(parse_recipe(raw), device="cpu")
    assert cached.valid.n == uncached.valid.n == N_TEST
    a, b = _batches(cached.valid), _batches(uncached.valid)
    assert len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))
    assert a[0][0].shape[-2:] == (SIZE, SIZE)
    decoded = torch.stack([uncached.valid.dataset[i][0] for i in range(N_TEST)])
    assert decoded.shape[-2:] == (20, 20) and torch.equal(decoded, cached.valid.images)
    xb, yb = uncached.train.one_batch()  # the training side runs through the workers too
    assert xb.shape == (32, 3, SIZE, SIZE) and torch.isfinite(xb).all()


def test_cache_is_rebuilt_when_the_source_files_change(tmp_path):
    from tinydata import tiny_recipe_dict, write_tiny_parquet

    from ndeconv.recipe import parse_recipe

    data = write_tiny_parquet(tmp_path / "data")
    recipe = parse_recipe(tiny_recipe_dict(data))
    first = make_dataloaders(recipe, device="cpu").train.images.clone()
    import datasets
    from PIL import Image

    images, labels = tiny_arrays(N_TRAIN, 0)
    inverted = 255 - images
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=CLASSES)})
    datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in inverted], "label": labels.tolist()},
                               features=features).to_parquet(str(data / "train-00000-of-00001.parquet"))
    second = make_dataloaders(recipe, device="cpu").train.images
    assert torch.equal(first, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert torch.equal(second, torch.from_numpy(inverted).permute(0, 3, 1, 2))
