"""Running estimates, eval caching, precision and degenerate inputs of the deconvolution layers."""

import pytest
import torch
from torch import nn

import ndeconv


def _train_steps(layer, make_input, steps=3, lr=0.05):
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    layer.train()
    for _ in range(steps):
        opt.zero_grad()
        layer(make_input()).square().mean().backward()
        opt.step()
    return opt


LAYERS = [
    (lambda: ndeconv.FastDeconv(6, 5, 3, padding=1, block=3), lambda n=8: torch.randn(n, 6, 9, 9) + 1),
    (lambda: ndeconv.Delinear(12, 4, block=6), lambda n=8: torch.randn(n, 12) * 2),
    (lambda: ndeconv.ChannelDeconv(7, block=3), lambda n=8: torch.randn(n, 7, 5, 5)),
]


@pytest.mark.parametrize("make_layer,make_input", LAYERS, ids=["FastDeconv", "Delinear", "ChannelDeconv"])
def test_eval_output_of_a_sample_does_not_depend_on_the_batch(make_layer, make_input):
    layer = make_layer()
    if any(True for _ in layer.parameters()):
        _train_steps(layer, make_input)
    else:
        layer(make_input())
    layer.eval()
    batch = make_input(6)
    with torch.no_grad():
        together = layer(batch)
        alone = torch.cat([layer(batch[i : i + 1]) for i in range(len(batch))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make_layer,make_input", LAYERS, ids=["FastDeconv", "Delinear", "ChannelDeconv"])
def test_state_dict_round_trip_and_train_eval_switch(make_layer, make_input):
    layer = make_layer()
    for _ in range(3):
        layer.train()(make_input())
    x = make_input(4)
    layer.eval()
    with torch.no_grad():
        before = layer(x)
        layer.train()
        train_out = layer(x)
        layer.eval()
    # A training forward moved the running estimates: eval output follows them.
    clone = make_layer()
    clone.load_state_dict(layer.state_dict())
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), layer(x))
        assert not torch.allclose(before, layer(x))
    assert torch.isfinite(train_out).all()


def test_eval_uses_running_estimates_not_the_batch():
    layer = ndeconv.FastDeconv(4, 3, 3, padding=1, block=4, momentum=1.0)
    x = torch.randn(5, 4, 8, 8) * 3 + 2
    train_out = layer(x)
    layer.eval()
    with torch.no_grad():
        # momentum 1: running estimates are exactly this batch's, so eval reproduces training.
        torch.testing.assert_close(layer(x), train_out.detach(), rtol=1e-5, atol=1e-5)
        # ... and a shifted batch is whitened with the same statistics, unlike in training.
        shifted = x + 10
        eval_shift = layer(shifted)
    layer.train()
    with torch.no_grad():
        train_shift = layer(shifted)
    assert not torch.allclose(eval_shift, train_shift, atol=1e-3)


def test_untrained_layer_in_eval_is_the_plain_convolution():
    layer = ndeconv.FastDeconv(4, 6, 3, stride=2, padding=1).eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = nn.functional.conv2d(x, layer.weight, layer.bias, 2, 1)
        torch.testing.assert_close(layer(x), expected)


def test_eval_fold_is_cached_and_invalidated_by_optimizer_step_and_load():
    layer = ndeconv.FastDeconv(4, 4, 3, padding=1, block=4)
    make = lambda n=6: torch.randn(n, 4, 8, 8)
    opt = _train_steps(layer, make)
    layer.eval()
    x = make(2)
    with torch.no_grad():
        first = layer(x)
        cached = layer._fold_cache[1][0]
        layer(x)
        assert layer._fold_cache[1][0] is cached  # reused, not recomputed
    # An optimizer step (in-place parameter update) invalidates the cache.
    layer.train()
    layer(make()).sum().backward()
    layer.eval()
    opt.step()
    with torch.no_grad():
        after_step = layer(x)
        fresh = ndeconv.functional.fast_deconv2d(
            x, layer.weight, layer.bias, layer.running_mean, layer.running_deconv, 1, 1, 1, 1
        )
    torch.testing.assert_close(after_step, fresh)
    assert not torch.allclose(after_step, first)
    # load_state_dict of other weights invalidates it too.
    other = ndeconv.FastDeconv(4, 4, 3, padding=1, block=4)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nn.functional.conv2d(x, other.weight, other.bias, padding=1))


def test_eval_with_gradients_reaches_the_weights():
    layer = ndeconv.FastDeconv(3, 2, 3, padding=1)
    layer(torch.randn(4, 3, 6, 6))
    layer.eval()
    layer(torch.randn(2, 3, 6, 6)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_freeze_iter_stops_updating_estimates():
    layer = ndeconv.FastDeconv(3, 4, 3, padding=1, freeze_iter=2)
    for _ in range(2):
        layer(torch.randn(4, 3, 8, 8))
    assert layer.frozen
    frozen = layer.running_deconv.clone()
    out = layer(torch.randn(4, 3, 8, 8) * 5)
    torch.testing.assert_close(layer.running_deconv, frozen)
    out.sum().backward()
    assert layer.weight.grad.abs().sum() > 0


def test_from_conv_keeps_weights_and_geometry():
    conv = nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False, padding_mode="reflect")
    layer = ndeconv.FastDeconv.from_conv(conv, bias=True, block=2)
    assert layer.kernel_size == (3, 5) and layer.stride == (2, 1) and layer.padding_mode == "reflect"
    torch.testing.assert_close(layer.weight, conv.weight)
    assert torch.count_nonzero(layer.bias) == 0
    layer.eval()
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_string_padding_matches_conv(padding):
    conv = nn.Conv2d(3, 4, 4, padding=padding)
    layer = ndeconv.FastDeconv.from_conv(conv).eval()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x))
    layer.train()
    assert layer(x).shape == conv(x).shape


def test_bf16_autocast_statistics_float32_conv_bf16():
    model = nn.Sequential(
        ndeconv.FastDeconv(3, 8, 3, padding=1), nn.ReLU(), ndeconv.FastDeconv(8, 8, 3, padding=1, groups=8),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), ndeconv.Delinear(8, 4, block=4),
    )
    seen = {}
    model[0].register_forward_hook(lambda m, i, o: seen.update(out=o.dtype))
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert seen["out"] == torch.bfloat16
    assert model[0].running_deconv.dtype == torch.float32
    assert torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # Statistics match a float32 run without autocast (they never saw bf16 rounding).
    ref = ndeconv.FastDeconv(3, 8, 3, padding=1)
    ref.load_state_dict({k: v for k, v in model[0].state_dict().items() if k in ("weight", "bias")}, strict=False)
    ref(x)
    torch.testing.assert_close(model[0].running_deconv, ref.running_deconv)


@pytest.mark.parametrize(
    "x",
    [
        torch.ones(4, 3, 8, 8),  # every channel constant: covariance is eps * I
        torch.randn(1, 3, 8, 8),  # batch of 1
        torch.randn(2, 3, 2, 2),  # spatial size smaller than the sampling stride
        torch.cat([torch.randn(4, 2, 8, 8), torch.full((4, 1, 8, 8), 7.0)], 1),  # one constant channel
    ],
    ids=["constant", "batch1", "tiny", "one_constant_channel"],
)
def test_degenerate_inputs_stay_finite(x):
    layer = ndeconv.FastDeconv(3, 4, 3, padding=1)
    y = layer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(layer.weight.grad).all()
    assert torch.isfinite(layer.running_deconv).all()
    head = ndeconv.Delinear(3, 2)
    out = head(x.mean((2, 3)))
    assert torch.isfinite(out).all()


def test_clear_errors():
    with pytest.raises(ValueError, match="expects \\(N, 3, H, W\\)"):
        ndeconv.FastDeconv(3, 4, 3)(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="sampling_stride"):
        ndeconv.FastDeconv(3, 4, 3, sampling_stride=0)
    with pytest.raises(ValueError, match="n_iter"):
        ndeconv.Delinear(3, 4, n_iter=0)
    with pytest.raises(ValueError, match="eps"):
        ndeconv.ChannelDeconv(3, block=2, eps=-1)
    with pytest.raises(ValueError, match="block"):
        ndeconv.Delinear(3, 4, block=0)


def test_stats_grad_false_treats_statistics_as_constants():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    full = ndeconv.FastDeconv(3, 4, 3, padding=1)
    const = ndeconv.FastDeconv(3, 4, 3, padding=1, stats_grad=False)
    const.load_state_dict(full.state_dict())
    (gx_full,) = torch.autograd.grad(full(x).square().sum(), x)
    y = const(x)
    torch.testing.assert_close(y, full.train()(x))  # same forward
    (gx_const,) = torch.autograd.grad(y.square().sum(), x)
    # Without the statistics' gradient, the input gradient is that of a conv with the folded weight.
    w, b = ndeconv.functional.fold_conv(const.weight, const.bias, *map(torch.Tensor.detach, _batch_stats(const, x)), 1)
    (expected,) = torch.autograd.grad(torch.nn.functional.conv2d(x, w.detach(), b.detach(), padding=1).square().sum(), x)
    torch.testing.assert_close(gx_const, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(gx_const, gx_full, atol=1e-4)


def _batch_stats(layer, x):
    samples = ndeconv.functional.conv_patch_samples(x, 3, block=layer.block, padding=1, sampling_stride=3)
    mean, cov = ndeconv.functional.whitening_stats(samples, layer.eps)
    return mean, ndeconv.functional.isqrt_newton_schulz(cov, layer.n_iter)


def test_max_samples_uses_evenly_spaced_rows():
    x = torch.randn(3, 4, 12, 12)
    layer = ndeconv.FastDeconv(4, 2, 3, padding=1, block=4, sampling_stride=1, momentum=1.0, max_samples=100)
    layer(x)
    samples = ndeconv.functional.conv_patch_samples(x, 3, block=4, padding=1, sampling_stride=1)
    kept = samples[:, :: -(-samples.shape[1] // 100)]
    assert kept.shape[1] <= 100
    torch.testing.assert_close(layer.running_mean, kept.mean(1))


def test_channel_deconv_stats_grad_false_covers_leftover_channels():
    x = torch.randn(16, 5, requires_grad=True)
    layer = ndeconv.ChannelDeconv(5, block=2, stats_grad=False)  # 2 blocks of 2, 1 leftover channel
    (gx,) = torch.autograd.grad(layer(x)[:, 4].sum(), x)
    # With constant statistics, the leftover output is (x - mean) / std: gradient 1/std on its own input only.
    expected = torch.zeros_like(x)
    expected[:, 4] = torch.rsqrt(x[:, 4].detach().var(correction=0) + layer.eps)
    torch.testing.assert_close(gx, expected)


def test_channel_deconv_freezes_blocks_and_leftover_channels_together():
    layer = ndeconv.ChannelDeconv(5, block=2, freeze_iter=2)
    for _ in range(2):
        layer(torch.randn(16, 5))
    rest_mean = layer.running_mean_rest.clone()
    layer(torch.randn(16, 5) + 3)  # frozen: neither part moves
    torch.testing.assert_close(layer.running_mean_rest, rest_mean)
    fresh = ndeconv.ChannelDeconv(5, block=2, freeze_iter=1)
    fresh(torch.randn(16, 5) + 3)  # the step that reaches freeze_iter still updates both parts
    assert fresh.running_mean_rest.abs().sum() > 0 and fresh.running_mean.abs().sum() > 0
