"""Segmentation: metrics against an independent confusion-matrix computation, joint augmentation
keeps image and mask aligned, the Cityscapes folder layout, the embedded digit canvases, and a
segmentation run end to end (its reported mean IoU recomputed from the saved model)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ndeconv
from ndeconv.cli import app
from ndeconv.errors import DataError
from ndeconv.recipe import load_recipe
from ndeconv.segmentation import (CITYSCAPES_TRAIN_IDS, confusion_matrix, digit_canvas_dataset, mean_iou,
                                  pixel_accuracy, scale_crop_flip)
from ndeconv.segmentation.loaders import load_segmentation_splits, make_segmentation_dataloaders
from ndeconv.rundir import load_run_recipe

runner = CliRunner()


def _iou_by_hand(pred, target, num_classes, ignore):
    """Per class, loop over pixels: TP, FP, FN; the mean over classes present in either."""
    ious = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if t == ignore:
                continue
            tp += p == c and t == c
            fp += p == c and t != c
            fn += p != c and t == c
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    counted = [(p, t) for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()) if t != ignore]
    return float(np.mean(ious)), sum(p == t for p, t in counted) / len(counted)


def test_mean_iou_and_pixel_accuracy_match_a_count_by_hand_with_the_ignore_label():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 9, 11), generator=gen)
    target[target == 4] = 255  # class 4 never appears: unlabelled pixels instead
    target[0, :2] = 255
    pred = torch.where(torch.rand(target.shape, generator=gen) < 0.6, target.clamp(max=3), torch.randint(0, 5, target.shape, generator=gen))
    conf = confusion_matrix(pred, target, 5, ignore_index=255)
    expected_iou, expected_acc = _iou_by_hand(pred.numpy(), target.numpy(), 5, 255)
    assert mean_iou(conf) == pytest.approx(expected_iou, abs=1e-12)
    assert pixel_accuracy(conf) == pytest.approx(expected_acc, abs=1e-12)
    assert conf.sum() == (target != 255).sum()


def _blocks(n, size=24, block=6):
    """Images constant on block x block squares, value 2**id (no blend of different blocks is a power
    of two), and the mask holding each square's id."""
    ids = torch.arange((size // block) ** 2).reshape(size // block, size // block)
    ids = ids.repeat_interleave(block, 0).repeat_interleave(block, 1)
    masks = torch.stack([(ids + k) % 16 for k in range(n)])
    images = (2.0 ** masks.double()).unsqueeze(1).repeat(1, 2, 1, 1)
    return images, masks


def test_crop_and_flip_at_scale_one_move_image_and_mask_together_exactly():
    images, masks = _blocks(6)
    x, m = scale_crop_flip(images, masks, (16, 30), scale=(1.0, 1.0), flip=True,
                           generator=torch.Generator().manual_seed(1))
    inside = m != 255
    assert inside.float().mean() > 0.3
    np.testing.assert_array_equal(torch.log2(x[:, 0][inside]).round().long().numpy(), m[inside].numpy())
    assert (x[:, 0][~inside].abs() < 1e-5 * images.max()).all()  # the window overhangs the 24x24 image: zeros and ignore
    assert torch.equal(x[:, 0], x[:, 1])


def test_random_scale_keeps_every_unblended_pixel_on_its_mask_label():
    images, masks = _blocks(8)
    x, m = scale_crop_flip(images, masks, (20, 20), scale=(0.6, 1.7), flip=True,
                           generator=torch.Generator().manual_seed(2))
    value = x[:, 0]
    log = torch.log2(value.clamp(min=1e-300))
    exact = (value > 0) & ((log - log.round()).abs() < 1e-9) & (m != 255)
    assert exact.float().mean() > 0.3  # block interiors
    np.testing.assert_array_equal(log[exact].round().long().numpy(), m[exact].numpy())


def test_a_shifted_mask_is_caught():
    images, masks = _blocks(4)
    gen = torch.Generator().manual_seed(1)
    x, m = scale_crop_flip(images, masks.roll(3, dims=-1), (16, 16), generator=gen)
    inside = m != 255
    assert not torch.equal(torch.log2(x[:, 0][inside]).round().long(), m[inside])


def _write_cityscapes(root, split, city, names, rng):
    for name in names:
        image_dir, mask_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(image_dir / f"{name}_leftImg8bit.png")
        ids = rng.choice([0, 1, 7, 8, 11, 24, 26, 33, 34], size=(8, 16)).astype(np.uint8)
        Image.fromarray(ids).save(mask_dir / f"{name}_gtFine_labelIds.png")


def test_cityscapes_layout_loads_with_label_ids_mapped_to_train_ids(tmp_path):
    rng = np.random.default_rng(0)
    _write_cityscapes(tmp_path, "train", "aachen", ["aachen_000000_000019", "aachen_000001_000019"], rng)
    _write_cityscapes(tmp_path, "val", "bonn", ["bonn_000000_000019"], rng)
    recipe = load_recipe("cityscapes", {"data.path": str(tmp_path), "data.resize": None, "data.image_size": 8,
                                        "train.batch_size": 2, "train.precision": "fp32"})
    splits = load_segmentation_splits(recipe.data)
    assert (len(splits.train), len(splits.valid)) == (2, 1)
    dls = make_segmentation_dataloaders(recipe, device="cpu", splits=splits)
    _, masks = next(iter(dls.valid))
    raw = np.asarray(Image.open(tmp_path / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png"))
    expected = np.vectorize(lambda i: CITYSCAPES_TRAIN_IDS.get(int(i), 255))(raw)
    np.testing.assert_array_equal(masks[0].numpy(), expected)
    assert set(np.unique(expected)) <= {0, 1, 2, 11, 13, 18, 255} and (expected == 255).any()


def test_cityscapes_image_without_mask_is_a_one_line_error(tmp_path):
    rng = np.random.default_rng(0)
    _write_cityscapes(tmp_path, "train", "aachen", ["a_1"], rng)
    _write_cityscapes(tmp_path, "val", "bonn", ["b_1"], rng)
    (tmp_path / "gtFine/val/bonn/b_1_gtFine_labelIds.png").unlink()
    recipe = load_recipe("cityscapes", {"data.path": str(tmp_path)})
    with pytest.raises(DataError, match="has no mask gtFine/val/bonn/b_1_gtFine_labelIds.png"):
        load_segmentation_splits(recipe.data)


def test_digit_canvases_label_ink_with_the_digit_and_the_rest_background():
    ds = digit_canvas_dataset(n_train=20, n_valid=5)
    for row in ds["train"]:
        image, mask = np.asarray(row["image"]), np.asarray(row["mask"])
        assert image.shape == mask.shape == (32, 32)
        assert set(np.unique(mask)) - {0} <= set(range(1, 11)) and (mask > 0).any()
        assert (image[mask > 0] > 64).all() and (image[mask == 0] <= 64).all()


@pytest.mark.slow
def test_segmentation_run_reports_the_mean_iou_its_saved_model_gives(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "digit_canvas", "--out", str(out), "-q", "--set", "train.epochs=1",
                                 "--set", "train.limit_train=128"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["score"] == "miou" and 0 <= results["miou"] <= 1
    model = ndeconv.load(out)
    dls = make_segmentation_dataloaders(load_run_recipe(out), device="cpu")
    conf = 0
    with torch.no_grad():
        for xb, yb in dls.valid:
            conf = conf + confusion_matrix(model(xb).argmax(1), yb, 11)
    assert mean_iou(conf) == pytest.approx(results["miou"], abs=1e-6)
    assert pixel_accuracy(conf) == pytest.approx(results["pixel_accuracy"], abs=1e-6)
    assert "mean IoU" in (out / "README.md").read_text()


def test_a_segmentation_recipe_on_data_without_masks_is_a_one_line_error(tiny_parquet, tmp_path):
    result = runner.invoke(app, ["train", "digit_canvas", "--data", str(tiny_parquet), "--out", str(tmp_path / "r"),
                                 "-q", "--set", "data.builtin=null", "--set", "data.image_column=img"])
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "has no column 'mask'" in lines[0], result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, level", [("torchvision:fcn_resnet50", -1), ("resnet18", 1)])
def test_segmentation_models_are_deconvolved_by_the_same_registry(name, level):
    from torch import nn

    from ndeconv.segmentation import create_segmentation_model

    model = create_segmentation_model(name, num_classes=5, feature_level=level)
    ndeconv.deconvolve(model)
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())
    assert any(isinstance(m, ndeconv.FastDeconv) for m in model.modules())
    x = torch.randn(2, 3, 48, 40)
    out = model(x)
    assert out.shape == (2, 5, 48, 40)
    out.square().mean().backward()
