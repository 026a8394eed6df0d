"""The speed-record recipe's pieces, each on small data: the patch-whitening stem, the weight averaging,
the schedule's corners, the alternating flip, the test-time augmentation, the shifts' learning rate,
label smoothing, Nesterov, fractional epochs; then the network and the whole recipe end to end."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from torch import nn

import ndeconv
from ndeconv.data.loaders import TensorImageDL
from ndeconv.layers import PatchWhitening
from ndeconv.recipe import load_recipe
from ndeconv.rundir import read_metrics
from ndeconv.train import resume, train
from ndeconv.train.learner import shift_splitter
from ndeconv.tta import TTA, mirror_translate_logits
from runstate import assert_identical, run_state
from tinydata import write_tiny_recipe


def _correlated_images(n=64, seed=0):
    """Images whose neighbouring pixels and channels correlate (a blur of noise shared by the channels)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, 11, 11, generator=g, dtype=torch.float64)
    shared = noise + 0.8 * noise[:, :1]
    return F.avg_pool2d(shared, 3, stride=1) + torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64).view(1, 3, 1, 1)


def test_the_stem_whitens_the_patches_it_was_fitted_on():
    """Before its bias, the covariance of the first 12 outputs is the identity up to the eps term
    (diag(l / (l + eps))), and the last 12 are their negatives."""
    images = _correlated_images()
    stem = PatchWhitening(3, 2, eps=5e-4).double()
    stem.fit(images)
    assert bool(stem.fitted) and not stem.weight.requires_grad
    out = F.conv2d(images, stem.weight)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 24)
    first = flat[:, :12] - flat[:, :12].mean(0)
    cov = first.T @ first / len(first)
    patches = F.unfold(images, 2).transpose(1, 2).reshape(-1, 12)
    centred = patches - patches.mean(0)
    evals = torch.linalg.eigvalsh(centred.T @ centred / len(centred)).flip(0)
    torch.testing.assert_close(cov, torch.diag(evals / (evals + 5e-4)), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(flat[:, 12:], -flat[:, :12])
    assert (evals / (evals + 5e-4)).min() > 0.9  # so it is nearly the identity


class _Record(Callback):
    """Parameters (and learning rates) at the start and after every training step, at its ``order``
    (the averaging runs at 95: 94 sees a step before it, 96 after), and at each epoch's end."""

    def __init__(self, order):
        self.order, self.start, self.steps, self.ends = order, None, [], []

    def _params(self):
        return [p.detach().clone() for p in self.learn.model.parameters()]

    def before_fit(self):
        self.start = self._params()

    def after_batch(self):
        if self.training:
            self.steps.append((self._params(), [float(h["lr"]) for h in self.learn.opt.hypers]))

    def after_train(self):
        self.ends.append(self._params())


def _tiny(tmp_path, tiny_parquet, **sections):
    raw = {"model": {"name": "convnet3", "norm": "bn", "init": "pytorch"}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet, **raw))


def test_the_averaging_pulls_every_nth_step_and_takes_the_average_at_the_end(tiny_parquet, tmp_path):
    recipe = _tiny(tmp_path, tiny_parquet, optim={"lookahead_every": 3, "lookahead_decay": 0.9,
                                                  "lookahead_power": 2.0})
    before, after = _Record(94), _Record(96)
    train(recipe, tmp_path / "run", progress=False, cbs=[before, after])
    total = len(before.steps)
    assert total == 2 * 8
    average = before.start
    for step, ((pre, _), (post, _)) in enumerate(zip(before.steps, after.steps), start=1):
        if step % 3:
            assert all(torch.equal(p, q) for p, q in zip(pre, post)), step
            continue
        w = 0.9 ** 3 * (step / total) ** 2
        average = [w * a + (1 - w) * p for a, p in zip(average, pre)]
        for a, q in zip(average, post):
            torch.testing.assert_close(q, a, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(before.steps[-1][0], after.ends[-1]))  # step 16 was no pull
    for a, q in zip(average, after.ends[-1]):
        torch.testing.assert_close(q, a, rtol=1e-5, atol=1e-6)


def test_the_piecewise_schedule_has_its_corners(tiny_parquet, tmp_path):
    recipe = _tiny(tmp_path, tiny_parquet, optim={"schedule": "piecewise_linear", "lr": 0.1,
                                                  "lr_points": [[0.0, 0.2], [0.25, 1.0], [1.0, 0.05]]},
                   train={"epochs": 2})
    rec = _Record(96)
    train(recipe, tmp_path / "run", progress=False, cbs=[rec])
    # the rate of step t (1-based) was set from the position (t - 1) / 16 before it
    rates = [lr[0] for _, lr in rec.steps]
    expected = [0.1 * (0.2 + 0.8 * p / 0.25) if p <= 0.25 else 0.1 * (1.0 - 0.95 * (p - 0.25) / 0.75)
                for p in (t / 16 for t in range(16))]
    np.testing.assert_allclose(rates[1:], expected[1:], rtol=1e-6)  # the first step runs before any schedule
    assert rates[4] == pytest.approx(0.1) and rates[0] == pytest.approx(0.02)


def test_the_alternating_flip_mirrors_each_image_on_every_other_epoch():
    images = torch.arange(4 * 2 * 3, dtype=torch.uint8).view(4, 1, 2, 3)
    dl = TensorImageDL(images, torch.arange(4), bs=4)
    dl.flip_mask = torch.tensor([True, False, False, True])
    served = []
    for epoch in range(3):
        dl.epoch = epoch
        served.append(dl.create_batch([0, 1, 2, 3])[0])
    flipped = [[bool(torch.equal(s[i], images[i].flip(-1))) for i in range(4)] for s in served]
    assert flipped[0] == [True, False, False, True] and flipped[2] == flipped[0]
    assert flipped[1] == [False, True, True, False]
    for s in served:
        for i in range(4):
            assert torch.equal(s[i], images[i]) or torch.equal(s[i], images[i].flip(-1))


def test_the_alternating_flip_of_a_recipe_is_drawn_once_per_image(tiny_parquet, tmp_path):
    from ndeconv.data import load_splits, make_dataloaders

    recipe = _tiny(tmp_path, tiny_parquet, augment={"flip": "alternate"})
    dls = make_dataloaders(recipe, splits=load_splits(recipe.data))
    mask = dls.train.flip_mask
    assert mask.dtype == torch.bool and len(mask) == 256 and 0.3 < mask.float().mean() < 0.7
    assert not dls.train.after_batch.flip  # no random flip on top of it
    again = make_dataloaders(recipe, splits=load_splits(recipe.data))
    assert torch.equal(again.train.flip_mask, mask)


def test_test_time_augmentation_averages_the_mirrored_and_translated_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5)).double()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    model(x)
    xn = x.numpy()
    padded = torch.from_numpy(np.pad(xn, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect"))
    up_left, down_right = padded[..., :6, :7], padded[..., 2:, 2:]
    with torch.no_grad():
        def pair(v):
            return (model(v) + model(torch.from_numpy(v.numpy()[..., ::-1].copy()))) / 2
        expected = 0.5 * pair(x) + 0.25 * pair(up_left) + 0.25 * pair(down_right)
        torch.testing.assert_close(mirror_translate_logits(model, x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mirror_translate_logits(model, x, model(x)), expected, rtol=1e-12, atol=1e-12)
        wrapped = TTA(model).eval()
        torch.testing.assert_close(wrapped(x), expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(wrapped.train()(x), model(x))


def test_norm_shifts_train_at_the_scaled_rate_with_the_same_decay_per_step():
    model = timm.create_model("airbench94", num_classes=10)
    plain, shifts = shift_splitter(model)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in shifts} == {id(m.bias) for m in norms}  # the stem's bias trains at the base rate
    assert id(model.stem.bias) in {id(p) for p in plain}
    assert len(plain) + len(shifts) == len(list(model.parameters()))


def test_the_speedrun_recipe_trains_end_to_end_and_resumes_exactly(tiny_parquet, tmp_path):
    """The bundled recipe, on the tiny set at 32x32: the stem is fitted before training and its bias
    trains for its first epochs only, the groups' rates and decays are in ratio, Nesterov SGD and
    the smoothed loss are used, 1.5 epochs end mid-epoch, TTA and plain accuracy are both recorded;
    an interrupted run resumes to the same weights (the average is in the checkpoint)."""
    overrides = {"data.path": str(tiny_parquet), "data.num_classes": 4, "train.batch_size": 32,
                 "train.epochs": "2.5", "model.name": "airbench94", "optim.lookahead_every": 3}
    recipe = load_recipe("cifar10_speedrun", overrides)
    stems = []

    class Watch(Callback):
        order = 96

        def before_fit(self):
            stems.append(self.learn.model.stem)
            self.biases, self.opt_seen = [], None

        def after_batch(self):
            if self.training:
                self.biases.append((self.epoch, self.learn.model.stem.bias.detach().clone()))
                self.opt_seen = self.learn.opt

    watch = Watch()
    run, results = train(recipe, tmp_path / "run", progress=False, cbs=[watch])
    stem = stems[0]
    assert bool(stem.fitted) and stem.bias_epochs == 3
    # the bias moved during epochs 1-2 only: recipe bias_epochs is 3, the run is 2.5 epochs, so it moves throughout
    assert not torch.equal(watch.biases[0][1], watch.biases[-1][1])
    opt = watch.opt_seen.opt
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    lrs = [g["lr"] for g in opt.param_groups]
    wds = [g["weight_decay"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(64 * lrs[0]) and wds[1] == pytest.approx(wds[0] / 64)
    rows = read_metrics(run / "metrics.csv")
    assert len(rows) == 3 and "accuracy_no_tta" in rows[-1] and results["accuracy_no_tta"] is not None
    assert sum(1 for _ in watch.biases) == 20  # 2.5 epochs of 8 steps

    class Stop(Callback):
        order = 80

        def after_epoch(self):
            if self.epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "cut", progress=False, cbs=[Stop()])
    resume(tmp_path / "cut", progress=False)
    assert_identical(run_state(tmp_path / "cut"), run_state(run))


def test_the_stem_bias_stops_after_its_epochs(tiny_parquet, tmp_path):
    """(Averaging off: it moves every weight, this bias included, towards their average.)"""
    overrides = {"data.path": str(tiny_parquet), "data.num_classes": 4, "train.batch_size": 32, "train.epochs": 3,
                 "optim.lookahead_every": 0}
    recipe = load_recipe("cifar10_speedrun", overrides)
    seen = []

    class Watch(Callback):
        order = 96

        def before_fit(self):
            self.learn.model.stem.bias_epochs = 1

        def after_batch(self):
            if self.training:
                seen.append((self.epoch, self.learn.model.stem.bias.detach().clone()))

    train(recipe, tmp_path / "run", progress=False, cbs=[Watch()])
    first = [b for e, b in seen if e == 0]
    later = [b for e, b in seen if e > 0]
    assert not torch.equal(first[0], first[-1])
    assert all(torch.equal(b, first[-1]) for b in later)


def test_label_smoothing_and_deconvolving_the_network():
    recipe = load_recipe("cifar10_speedrun")
    from ndeconv.tasks import get_task

    loss = get_task("classification").loss(recipe)
    logits, target = torch.randn(8, 10), torch.randint(0, 10, (8,))
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target, label_smoothing=0.2))
    model = ndeconv.deconvolve(timm.create_model("airbench94", num_classes=10))
    assert isinstance(model.stem, PatchWhitening)  # the data-fitted stem is deconvolution's frozen stem
    assert not [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sum(isinstance(m, ndeconv.FastDeconv) for m in model.modules()) == 6
