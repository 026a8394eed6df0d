"""``update_every = k``: statistics recomputed on every k-th training step, the running estimate in between."""

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback

import ndeconv
import ndeconv.train.budget as budget_mod
from ndeconv import functional as DF
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe
from ndeconv.rundir import read_metrics
from ndeconv.train import resume, train
from runstate import assert_identical, run_state
from tinydata import write_tiny_recipe
import reference


def _layer(**kwargs):
    torch.manual_seed(0)
    return ndeconv.FastDeconv(6, 5, 3, padding=1, block=3, sampling_stride=1, n_iter=5, **kwargs).double()


def _batches(n):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 6, 5, 5, generator=g, dtype=torch.float64) * (1 + i) + i for i in range(n)]


def _stats(layer, prefix="running"):
    mean, deconv = getattr(layer, f"{prefix}_mean"), getattr(layer, f"{prefix}_deconv")
    return [(mean[g].numpy().copy(), deconv[g].numpy().copy()) for g in range(mean.shape[0])]


def _reference(layer, x, stats=None):
    return reference.fast_deconv(x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                 padding=layer.padding, block=3, sampling_stride=1, n_iter=5, stats=stats)


def test_k1_is_the_papers_layer_bit_for_bit():
    """Output, gradients and running estimates of k = 1 equal the definition composed from the
    functional pieces, with the running estimates moved by exactly ``momentum``."""
    layer = _layer(update_every=1)
    for x in _batches(3):
        x = x.requires_grad_()
        mean0, deconv0 = layer.running_mean.clone(), layer.running_deconv.clone()
        out = layer(x)
        w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
        xx = x.detach().clone().requires_grad_()
        mean, cov = DF.whitening_stats(DF.conv_patch_samples(xx, (3, 3), block=3, padding=(1, 1), sampling_stride=1),
                                       layer.eps)
        deconv = DF.isqrt_newton_schulz(cov, 5)
        fw, fb = DF.fold_conv(w, b, mean, deconv, 1)
        expected = F.conv2d(xx, fw, fb, padding=1)
        assert torch.equal(out, expected)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        assert torch.equal(x.grad, xx.grad) and torch.equal(layer.weight.grad, w.grad)
        layer.weight.grad = layer.bias.grad = None
        assert torch.equal(layer.running_mean, mean0.lerp(mean.detach(), 0.1))
        assert torch.equal(layer.running_deconv, deconv0.lerp(deconv.detach(), 0.1))


def test_in_between_steps_whiten_with_the_last_updates_estimate():
    """Not with the running estimate: after an update it is 27% the batch's and 73% the identity it
    started from, a whitening of nothing the layer sees."""
    k = 3
    layer = _layer(update_every=k)
    momentum = 1 - 0.9 ** k
    for step, x in enumerate(_batches(7)):
        before, last = _stats(layer), _stats(layer, "last")
        with torch.no_grad():
            out = layer(x).numpy()
        if step % k == 0:  # an update step: the batch's statistics, against the float64 definition
            ref, batch = _reference(layer, x)
            np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
            for (m0, d0), (mb, db), (m1, d1), (ml, dl) in zip(before, batch, _stats(layer), _stats(layer, "last")):
                np.testing.assert_allclose(m1, m0 + momentum * (mb - m0), rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(d1, d0 + momentum * (db - d0), rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(ml, mb, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(dl, db, rtol=1e-9, atol=1e-12)
        else:  # the last update's estimate; this step leaves every estimate as it was
            ref, _ = _reference(layer, x, stats=last)
            np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
            for (m0, d0), (m1, d1) in zip(before + last, _stats(layer) + _stats(layer, "last")):
                assert np.array_equal(m0, m1) and np.array_equal(d0, d1)
    assert (int(layer.num_steps), int(layer.num_batches_tracked)) == (7, 3)  # steps 0, 3, 6 updated


def test_a_reuse_step_gathers_no_patches_and_folds_the_last_estimate(monkeypatch):
    layer = _layer(update_every=2)
    x0, x1 = _batches(2)
    layer(x0)
    monkeypatch.setattr(DF, "conv_patch_samples", lambda *a, **k: pytest.fail("a reuse step gathered patches"))
    x1 = x1.requires_grad_()
    out = layer(x1)
    grad = torch.randn_like(out)
    out.backward(grad)
    # the same as a plain conv with the running estimate folded in, gradients included
    w = layer.weight.detach().clone().requires_grad_()
    xx = x1.detach().clone().requires_grad_()
    fw, fb = DF.fold_conv(w, layer.bias.detach(), layer.last_mean, layer.last_deconv, 1)
    expected = F.conv2d(xx, fw, fb, padding=1)
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x1.grad, xx.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-12, atol=1e-12)


def test_every_layer_kind_counts_its_steps():
    torch.manual_seed(0)
    layers = [(ndeconv.Delinear(8, 3, block=4, update_every=2), torch.randn(16, 8)),
              (ndeconv.ChannelDeconv(5, block=2, update_every=2), torch.randn(16, 5)),
              (ndeconv.FastDeconv1d(4, 3, 3, block=2, update_every=2), torch.randn(4, 4, 9)),
              (ndeconv.FastDeconv3d(4, 3, 3, block=2, update_every=2), torch.randn(2, 4, 5, 5, 5)),
              (ndeconv.FastDeconvTranspose2d(4, 3, 3, block=2, update_every=2), torch.randn(2, 4, 5, 5))]
    for layer, x in layers:
        for _ in range(5):
            layer(x)
        assert (int(layer.num_steps), int(layer.num_batches_tracked)) == (5, 3), type(layer).__name__
        layer.eval()
        layer(x)
        assert int(layer.num_steps) == 5  # eval takes no step


def test_the_stem_freezes_after_its_steps_not_its_updates():
    layer = _layer(update_every=2, freeze_iter=5)
    for x in _batches(9):
        layer(x)
    assert layer.frozen and int(layer.num_batches_tracked) == 3  # steps 0, 2, 4; frozen from step 5


def test_deconvolve_and_recipes_pass_it_on():
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), update_every=4)
    layers = [m for m in model.modules() if hasattr(m, "update_every")]
    assert layers and {m.update_every for m in layers} == {4}
    assert "update_every=4" in repr(layers[0])
    recipe = load_recipe("digits", {"model.deconv.update_every": "16"})
    assert recipe.model.deconv.update_every == 16
    with pytest.raises(RecipeError, match=r"model.deconv.update_every must be in \[1, 1000000\], got 0"):
        load_recipe("digits", {"model.deconv.update_every": "0"})
    with pytest.raises(RecipeError, match=r"^update_every must be in \[1, 1000000\], got 0$"):
        ndeconv.FastDeconv(3, 3, 3, update_every=0)


def test_fused_layer_is_the_eval_function():
    layer = _layer(update_every=3)
    for x in _batches(4):
        layer(x)
    layer.eval()
    x = _batches(1)[0]
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", ["none", "channel"])
def test_compiled_model_updates_on_the_same_steps(scale):
    torch.manual_seed(0)
    eager = ndeconv.deconvolve(timm.create_model("convnet3", num_classes=10, in_chans=1), update_every=2, scale=scale)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        for model, fn in ((eager, eager), (compiled_model, compiled)):
            model.zero_grad()
            F.cross_entropy(fn(x), y).backward()
        for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        for (name, b), c in zip(eager.named_buffers(), compiled_model.buffers()):
            torch.testing.assert_close(c, b, msg=name)


def test_calibration_times_whole_update_cycles(tiny_parquet, tmp_path, monkeypatch):
    seen = []

    def measure(learn, warmup, timed):
        seen.append(timed)
        return 0.01

    monkeypatch.setattr(budget_mod, "measure_step_seconds", measure)
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet),
                         {"train.budget": "0.1s", "model.deconv.update_every": "3"})
    train(recipe, tmp_path / "run", progress=False)
    assert seen == [9]  # 8 steps rounded up to whole 3-step cycles


class _StopAfterFirstEpoch(Callback):
    order = 80

    def after_epoch(self):
        if self.epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("scale", ["none", "channel"])
def test_the_step_counter_survives_resume_bit_exactly(tiny_parquet, tmp_path, scale):
    """8 batches an epoch with k = 3: the cycle runs across epoch boundaries, so a resumed run is
    only exact when the counter (and, with ``scale: channel``, the running input moments) come
    back from the checkpoint."""
    recipe = load_recipe(write_tiny_recipe(tmp_path / "tiny.yaml", tiny_parquet),
                         {"train.epochs": 3, "model.deconv.update_every": "3", "model.deconv.scale": scale})
    _, reference_results = train(recipe, tmp_path / "ref", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "run", progress=False, cbs=[_StopAfterFirstEpoch()])
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 1
    resume(tmp_path / "run", progress=False)
    state = run_state(tmp_path / "run")
    counters = {k: int(v) for k, v in state["model"].items() if k.endswith("num_steps")}
    assert counters and set(counters.values()) == {3 * 8}
    assert_identical(state, run_state(tmp_path / "ref"))


def test_eval_refolds_after_training_that_updates_data_in_place():
    """fastai's optimizer steps ``p.data`` in place, which leaves ``p._version`` alone: the eval fold
    cache must not outlive a training phase (a frozen layer's running estimate never invalidates it)."""
    layer = _layer(freeze_iter=1)
    x = _batches(1)[0]
    layer(x)  # the one update; frozen from now on
    layer.eval()
    with torch.no_grad():
        before = layer(x)
    layer.train()
    layer.weight.data.mul_(2.0)  # as an optimizer step through .data: the version counter stays
    layer.bias.data.add_(1.0)
    layer.eval()
    with torch.no_grad():
        after = layer(x)
        fresh = layer.fused()(x)
    torch.testing.assert_close(after, fresh, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(after, before)


def test_a_reuse_steps_graph_survives_the_next_update():
    """Two forwards before one backward (gradient accumulation): the reuse step's estimate is its own
    copy, not the buffer the next update overwrites in place."""
    layer = _layer(update_every=2)
    x = _batches(1)[0].requires_grad_()
    layer(x).sum().backward()  # an update
    reused, updated = layer(x), layer(x * 2)
    (reused.sum() + updated.sum()).backward()
    assert torch.isfinite(x.grad).all()
