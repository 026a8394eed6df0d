"""The layers against an independent float64 computation of method.md (tests/reference.py)."""

import numpy as np
import pytest
import torch

import ndeconv
from ndeconv import functional as DF
from ndeconv import _autograd as AG

import reference

GEOMETRIES = [
    # (in, out, kernel, stride, padding, dilation, groups, block, sampling_stride, hw)
    dict(cin=6, cout=5, k=3, stride=1, padding=1, dilation=1, groups=1, block=64, s=3, hw=(9, 8)),
    dict(cin=8, cout=4, k=3, stride=2, padding=1, dilation=1, groups=1, block=2, s=1, hw=(9, 9)),
    dict(cin=8, cout=6, k=3, stride=1, padding=2, dilation=2, groups=1, block=4, s=2, hw=(8, 7)),
    dict(cin=12, cout=7, k=1, stride=1, padding=0, dilation=1, groups=1, block=4, s=1, hw=(5, 6)),
    dict(cin=4, cout=3, k=5, stride=1, padding=2, dilation=1, groups=1, block=3, s=3, hw=(10, 9)),
    dict(cin=6, cout=4, k=(3, 1), stride=(1, 2), padding=(1, 0), dilation=1, groups=1, block=4, s=2, hw=(7, 8)),
    dict(cin=8, cout=6, k=3, stride=1, padding=1, dilation=1, groups=2, block=64, s=2, hw=(6, 6)),
    dict(cin=6, cout=6, k=3, stride=2, padding=1, dilation=1, groups=6, block=64, s=1, hw=(8, 8)),
    # fewer sampled rows (2 images x 4 positions) than columns (f = 16*9): a rank-deficient covariance
    dict(cin=16, cout=4, k=3, stride=1, padding=1, dilation=1, groups=1, block=16, s=3, hw=(4, 4)),
    # the paper's block at full size (f = 576: strip covariance, eigh) from 8 sampled rows
    dict(cin=64, cout=4, k=3, stride=1, padding=1, dilation=1, groups=1, block=64, s=3, hw=(5, 6)),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _assert_running_estimates(layer, stats):
    """Running estimates after one step: momentum * batch statistics + (1 - momentum) * initial."""
    for grp, (mu, deconv) in enumerate(stats):
        np.testing.assert_allclose(layer.running_mean[grp].numpy(), 0.1 * mu, rtol=1e-6, atol=1e-12)
        expected = 0.1 * deconv + 0.9 * np.eye(len(deconv))
        np.testing.assert_allclose(layer.running_deconv[grp].numpy(), expected, rtol=1e-6, atol=1e-9)


def _assert_fuses_to(layer, plain, x):
    """In eval, ``fused()`` is a ``plain`` layer computing the same output."""
    layer.eval()
    fused = layer.fused()
    assert type(fused) is plain
    with torch.no_grad():
        torch.testing.assert_close(fused(x), layer(x))


@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: f"k{g['k']}s{g['stride']}d{g['dilation']}g{g['groups']}b{g['block']}")
def test_fast_deconv_matches_float64_reference(g):
    layer = ndeconv.FastDeconv(
        g["cin"], g["cout"], g["k"], stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
        groups=g["groups"], block=g["block"], sampling_stride=g["s"], n_iter=5, dtype=torch.float64,
    )
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, g["cin"], *g["hw"], dtype=torch.float64) * 2 + 0.5
    y = layer(x)
    ref, stats = reference.fast_deconv(
        x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), stride=_pair(g["stride"]),
        padding=_pair(g["padding"]), dilation=_pair(g["dilation"]), groups=g["groups"], block=g["block"],
        sampling_stride=g["s"], eps=1e-5, n_iter=5,
    )
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    _assert_running_estimates(layer, stats)


def _reference_output(g, x, weight, bias):
    return reference.fast_deconv(
        x, weight, bias, stride=_pair(g["stride"]), padding=_pair(g["padding"]), dilation=_pair(g["dilation"]),
        groups=g["groups"], block=g["block"], sampling_stride=g["s"], eps=1e-5, n_iter=5,
    )[0]


@pytest.mark.parametrize("g", [GEOMETRIES[i] for i in (1, 6, 7, 8, 9)], ids=["b2", "grouped", "depthwise", "fewer_rows", "f576"])
def test_fast_deconv_gradients_match_float64_reference(g):
    # Directional derivatives of the reference (central differences, float64) against the
    # layer's input and weight gradients: patches, covariance, Newton-Schulz and fold backward.
    gen = torch.Generator().manual_seed(3)
    layer = ndeconv.FastDeconv(
        g["cin"], g["cout"], g["k"], stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
        groups=g["groups"], block=g["block"], sampling_stride=g["s"], n_iter=5, dtype=torch.float64,
    )
    x = (torch.randn(2, g["cin"], *g["hw"], dtype=torch.float64, generator=gen) * 2 + 0.5).requires_grad_()
    y = layer(x)
    grad_out = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(grad_out)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    h = 1e-5
    for name, grad, point in (("input", x.grad, x.detach().numpy()), ("weight", layer.weight.grad, w)):
        direction = torch.randn(point.shape, dtype=torch.float64, generator=gen).numpy()

        def value(t):
            moved = point + t * direction
            out = _reference_output(g, moved, w, b) if name == "input" else _reference_output(g, x.detach().numpy(), moved, b)
            return float((out * grad_out.numpy()).sum())

        expected = (value(h) - value(-h)) / (2 * h)
        got = float((grad.numpy() * direction).sum())
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), name


def test_delinear_matches_float64_reference():
    layer = ndeconv.Delinear(12, 5, block=4, dtype=torch.float64)
    x = torch.randn(16, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64) + 1.0
    ref = reference.delinear(x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), block=4)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(32, 10), (4, 10, 7, 6)])
def test_channel_deconv_matches_float64_reference(shape):
    layer = ndeconv.ChannelDeconv(10, block=4, sampling_stride=2).double()
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    ref = reference.channel_deconv(x.numpy(), block=4, sampling_stride=2)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-6, atol=1e-8)


def test_newton_schulz_converges_to_inverse_square_root():
    a = torch.randn(3, 40, 12, dtype=torch.float64)
    cov = a.transpose(1, 2) @ a / 40 + 0.5 * torch.eye(12, dtype=torch.float64)
    d = DF.isqrt_newton_schulz(cov, n_iter=30)
    evals, evecs = torch.linalg.eigh(cov)
    expected = evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.transpose(1, 2)
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-10)


def test_newton_schulz_few_steps_match_plain_iteration():
    a = torch.randn(64, 9, dtype=torch.float64)
    cov = a.T @ a / 64 + 1e-5 * torch.eye(9, dtype=torch.float64)
    for n_iter in (1, 2, 5):
        np.testing.assert_allclose(
            DF.isqrt_newton_schulz(cov[None], n_iter)[0].numpy(), reference.newton_schulz(cov.numpy(), n_iter), rtol=1e-12
        )


def _covariances(kind: str) -> torch.Tensor:
    """Batches of SPD matrices like those the layers see: well conditioned, rank-deficient (fewer
    samples than dimensions, plus eps), and stem-like (condition number ~1e5)."""
    gen = torch.Generator().manual_seed(0)
    if kind == "well":
        a = torch.randn(3, 60, 12, dtype=torch.float64, generator=gen)
    elif kind == "fewer_rows":
        a = torch.randn(3, 5, 12, dtype=torch.float64, generator=gen)
    else:
        a = torch.randn(3, 200, 12, dtype=torch.float64, generator=gen) * torch.logspace(0, -2.5, 12, dtype=torch.float64)
    return a.transpose(1, 2) @ a / a.shape[1] + 1e-5 * torch.eye(12, dtype=torch.float64)


@pytest.fixture(params=["spectral", "matrix"])
def newton_schulz_path(request, monkeypatch) -> str:
    """Route every size through one Newton-Schulz path (CPU picks by size and by whether a gradient
    is needed: ``SPECTRAL_MIN_F``)."""
    least = 1 if request.param == "spectral" else 10**9
    monkeypatch.setattr(AG, "SPECTRAL_MIN_F", {True: least, False: least})
    return request.param


@pytest.mark.parametrize("kind", ["well", "fewer_rows", "stem_like"])
@pytest.mark.parametrize("n_iter", [1, 5, 15])
def test_newton_schulz_paths_equal_the_float64_iteration(kind, n_iter, newton_schulz_path):
    # Each path, with a gradient needed (spectral: eigh and divided differences) and without.
    cov = _covariances(kind)
    expected = np.stack([reference.newton_schulz(c, n_iter) for c in cov.numpy()])
    with_grad = DF.isqrt_newton_schulz(cov.clone().requires_grad_(), n_iter)
    with torch.no_grad():
        without = DF.isqrt_newton_schulz(cov, n_iter)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(with_grad.detach().numpy(), expected, rtol=1e-9, atol=1e-11 * scale)
    np.testing.assert_allclose(without.numpy(), expected, rtol=1e-9, atol=1e-11 * scale)
    # float32, as the layers train: as close to the float64 iteration as the float32 matrix
    # iteration (at 15 steps on a rank-deficient covariance float32 itself loses ~1e-3).
    c32 = cov.float()
    ours = [DF.isqrt_newton_schulz(c32.clone().requires_grad_(), n_iter).detach().double().numpy()]
    with torch.no_grad():
        ours.append(DF.isqrt_newton_schulz(c32, n_iter).double().numpy())
    y32 = c32 / torch.linalg.matrix_norm(c32, keepdim=True)
    plain32 = (AG.newton_schulz_steps(y32, n_iter) / torch.linalg.matrix_norm(c32, keepdim=True).sqrt()).double().numpy()
    plain_error = np.abs(plain32 - expected).max() / scale
    for result in ours:
        assert np.abs(result - expected).max() / scale <= max(2e-6, 4 * plain_error)


@pytest.mark.parametrize("m,f", [(50, 12), (40, 300), (700, 577)])
def test_whitening_stats_match_float64_reference(m, f):
    # Wide covariances are multiplied by strips (upper triangle, mirrored): one strip, two (fewer
    # rows than columns) and three of uneven width; float64, then float32 and the backward.
    gen = torch.Generator().manual_seed(f)
    samples = torch.randn(2, m, f, dtype=torch.float64, generator=gen) @ torch.randn(f, f, dtype=torch.float64, generator=gen) + 3
    mean, cov = DF.whitening_stats(samples, eps=1e-3)
    for g in range(2):
        ref_mean, ref_cov = reference.covariance(samples[g].numpy(), 1e-3)
        np.testing.assert_allclose(mean[g].numpy(), ref_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cov[g].numpy(), ref_cov, rtol=1e-10, atol=1e-10 * np.abs(ref_cov).max())
    _, cov32 = DF.whitening_stats(samples.float(), eps=1e-3)
    np.testing.assert_allclose(cov32.double().numpy(), cov.numpy(), rtol=0, atol=1e-5 * cov.abs().max().item())
    leaf = samples.clone().requires_grad_()
    grad_mean, grad_cov = torch.randn(2, f, dtype=torch.float64), torch.randn(2, f, f, dtype=torch.float64)
    got = torch.autograd.grad(DF.whitening_stats(leaf, 1e-3), leaf, (grad_mean, grad_cov))[0]
    plain = samples.clone().requires_grad_()
    centred = plain - plain.mean(1, keepdim=True)
    outputs = (plain.mean(1), centred.transpose(1, 2) @ centred / m)
    expected = torch.autograd.grad(outputs, plain, (grad_mean, grad_cov))[0]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())


def test_whitened_patches_have_identity_covariance():
    # Strongly correlated input: smoothed noise, so neighbouring pixels and channels correlate.
    x = torch.randn(8, 4, 20, 20, dtype=torch.float64)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1) + x.mean(1, keepdim=True)
    samples = DF.conv_patch_samples(x, 3, block=2, padding=1, sampling_stride=1)
    mean, cov = DF.whitening_stats(samples, eps=0.0)
    assert torch.linalg.cond(cov[0]) > 10  # genuinely correlated
    d = DF.isqrt_newton_schulz(cov, n_iter=40)
    white = (samples - mean.unsqueeze(1)) @ d
    torch.testing.assert_close(white.transpose(1, 2) @ white / white.shape[1], torch.eye(18, dtype=torch.float64)[None],
                               rtol=0, atol=1e-8)


def test_patch_samples_are_the_convolutions_own_patches():
    # sampling_stride=1, block=C: one sample per output position; the conv of the samples
    # with the flattened weight is the convolution itself.
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    w = torch.randn(3, 5, 3, 2, dtype=torch.float64)
    samples = DF.conv_patch_samples(x, (3, 2), block=5, stride=(2, 1), padding=(1, 0), dilation=(1, 2), sampling_stride=1)
    conv = torch.nn.functional.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    via_samples = (samples[0] @ w.reshape(3, -1).T).reshape(2, conv.shape[2], conv.shape[3], 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(via_samples, conv)


def test_conv_weight_blocks_round_trip():
    w = torch.randn(6, 4, 3, 3)
    blocks = DF.conv_weight_blocks(w, groups=2, f=18)
    assert blocks.shape == (2, 3 * 2, 18)
    torch.testing.assert_close(DF.conv_weight_unblocks(blocks, w.shape), w)


@pytest.mark.parametrize("cin,block", [(48, 64), (128, 64)])
def test_folded_1x1_weight_has_standard_strides(cin, block):
    # Strides that also read as channels-last crashed oneDNN's convolution backward.
    w = torch.randn(48, cin, 1, 1)
    f = DF.resolve_block(block, cin)
    folded, _ = DF.fold_conv(w, None, torch.zeros(1, f), torch.eye(f)[None], 1)
    assert folded.stride() == torch.empty(folded.shape).stride()


@pytest.mark.parametrize("block,channels,expected", [(64, 64, 64), (64, 3, 3), (64, 96, 32), (4, 6, 2), (7, 14, 7)])
def test_resolve_block(block, channels, expected):
    assert DF.resolve_block(block, channels) == expected


def test_gradcheck_grouped_fast_deconv_and_fc_layers():
    grouped = ndeconv.FastDeconv(4, 4, 3, padding=1, groups=2, sampling_stride=1, n_iter=3, eps=1e-2, dtype=torch.float64)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(grouped, (x,))
    lin = ndeconv.Delinear(6, 3, block=3, n_iter=3, eps=1e-2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lin, (torch.randn(5, 6, dtype=torch.float64, requires_grad=True),))
    chan = ndeconv.ChannelDeconv(5, block=2, n_iter=3, eps=1e-2).double()
    assert torch.autograd.gradcheck(chan, (torch.randn(6, 5, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("kernel,dilation,sampling_stride", [(3, 1, 3), ((1, 3), (1, 2), 5), (2, 1, 2)])
def test_gradcheck_disjoint_windows_scatter_backward(kernel, dilation, sampling_stride):
    # Sampled windows that never overlap take the scatter backward instead of col2im.
    layer = ndeconv.FastDeconv(4, 3, kernel, padding=1, dilation=dilation, block=2, sampling_stride=sampling_stride,
                               n_iter=3, eps=1e-2, dtype=torch.float64)
    x = torch.randn(3, 4, 8, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def _clustered_covariance() -> torch.Tensor:
    """40 x 40 SPD with eigenvalues from 1e-9 to 1 (relative), exact repeats and near-repeats."""
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64, generator=gen))
    evals = torch.cat([torch.logspace(-9, 0, 24, dtype=torch.float64), torch.full((6,), 1e-3, dtype=torch.float64),
                       0.3 * (1 + 1e-9 * torch.arange(5, dtype=torch.float64)), torch.full((5,), 3e-9, dtype=torch.float64)])
    return (q * evals) @ q.T


def _covariance_case(case: str) -> torch.Tensor:
    if case == "repeated":
        a = torch.randn(2, 30, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        a[:, :, 7:] = a[:, :, 6:7]  # rank-deficient: repeated (near-zero) eigenvalues
        return a.transpose(1, 2) @ a / 30 + 1e-5 * torch.eye(10, dtype=torch.float64)
    if case == "clustered":
        return _clustered_covariance()[None]
    return _covariances(case)


@pytest.mark.parametrize("case", ["repeated", "clustered", "well", "fewer_rows", "stem_like"])
@pytest.mark.parametrize("n_iter", [1, 2, 5, 15])
def test_newton_schulz_backward_equals_autograd_through_the_steps(case, n_iter, newton_schulz_path):
    # Equal, clustered, near-zero and well-separated eigenvalues: each path's backward against
    # autograd through the plain steps written out.
    cov = _covariance_case(case)
    f = cov.shape[-1]
    grad_out = torch.randn(cov.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    leaf = cov.clone().requires_grad_()
    (spectral,) = torch.autograd.grad(DF.isqrt_newton_schulz(leaf, n_iter), leaf, grad_out)

    def plain(c):  # the iteration written out, differentiated by autograd
        norm = torch.linalg.matrix_norm(c, keepdim=True)
        y, z = c / norm, torch.eye(f, dtype=c.dtype).expand_as(c)
        for _ in range(n_iter):
            t = (3 * torch.eye(f, dtype=c.dtype) - z @ y) / 2
            y, z = y @ t, t @ z
        return z / norm.sqrt()

    leaf2 = cov.clone().requires_grad_()
    (expected,) = torch.autograd.grad(plain(leaf2), leaf2, grad_out)
    torch.testing.assert_close(spectral, expected, rtol=1e-8, atol=1e-8 * expected.abs().max().item())


@pytest.mark.parametrize("n_iter", [5, 15])
def test_newton_schulz_divided_differences_against_float64_definition(n_iter):
    # (p(a) - p(b)) / (a - b) and p'(a) on the diagonal, with p the scalar iteration run in
    # 80-digit decimal arithmetic, for separated, close, equal and near-zero pairs (float32 inputs).
    from decimal import Decimal, localcontext

    def p(y: Decimal) -> Decimal:
        z = Decimal(1)
        for _ in range(n_iter):
            t = Decimal("1.5") - z * y / 2
            y, z = y * t, t * z
        return z

    evals = torch.tensor([1e-7, 1.1e-7, 1e-3, 1.000001e-3, 0.25, 0.9, 1.0], dtype=torch.float32)
    values, dd = AG.newton_schulz_spectrum(evals, n_iter)
    with localcontext() as ctx:
        ctx.prec = 80
        exact = [Decimal(float(v)) for v in evals]
        h = Decimal(10) ** -30
        for i, a in enumerate(exact):
            assert float(values[i]) == pytest.approx(float(p(a)), rel=1e-6)
            for j, b in enumerate(exact):
                # p'(a) on the diagonal by a central difference of the 80-digit polynomial
                want = (p(a) - p(b)) / (a - b) if a != b else (p(a + h) - p(a - h)) / (2 * h)
                assert float(dd[i, j]) == pytest.approx(float(want), rel=2e-6), (i, j)


@pytest.mark.parametrize("mode, np_mode", [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap"),
                                           ("same", "constant")])
def test_training_with_other_padding_matches_the_reference_on_the_padded_input(mode, np_mode):
    """Reflect/replicate/circular padding and padding="same" (k=4: 1 before, 2 after): the layer
    whitens the patches of the padded input, so the reference sees that input with no padding."""
    k, pad = (4, ((1, 2), (1, 2))) if mode == "same" else (3, ((1, 1), (1, 1)))
    kwargs = dict(padding="same") if mode == "same" else dict(padding=1, padding_mode=mode)
    layer = ndeconv.FastDeconv(6, 5, k, block=3, sampling_stride=2, n_iter=5, dtype=torch.float64, **kwargs)
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64) * 2 + 0.5
    y = layer(x)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), *pad), mode=np_mode)
    ref, stats = reference.fast_deconv(padded, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                       block=3, sampling_stride=2, eps=1e-5, n_iter=5)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(layer.running_mean[0].numpy(), 0.1 * stats[0][0], rtol=1e-6, atol=1e-12)
    y.square().sum().backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stride, hw, pad", [
    # TF "SAME": out = ceil(n / s), total = (out - 1) s + k - n, the odd pixel after (k = 3)
    (2, (7, 8), ((1, 1), (0, 1))),   # H: out 4, total 2; W: out 4, total 1
    (1, (6, 5), ((1, 1), (1, 1))),
    (2, (6, 6), ((0, 1), (0, 1))),   # out 3, total 1
])
def test_fast_deconv_same_matches_the_reference_on_the_tf_same_padded_input(stride, hw, pad):
    from timm.layers import Conv2dSame

    conv = Conv2dSame(6, 5, 3, stride=stride).double()
    model = ndeconv.deconvolve(torch.nn.Sequential(conv), block=3, sampling_stride=2, block_fc=0)
    layer = model[0]
    assert type(layer) is ndeconv.FastDeconvSame
    x = torch.randn(2, 6, *hw, dtype=torch.float64) * 2 + 0.5
    y = layer(x)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), *pad))
    ref, stats = reference.fast_deconv(padded, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                       stride=(stride, stride), block=3, sampling_stride=2, eps=1e-5, n_iter=5)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    _assert_running_estimates(layer, stats)
    _assert_fuses_to(layer, Conv2dSame, x)


@pytest.mark.parametrize("k, stride, padding, dilation, groups, block", [
    (3, 1, 1, 1, 1, 3), (5, 2, 2, 1, 1, 6), (3, 1, 2, 2, 1, 2), (3, 1, 1, 1, 2, 64),
])
def test_fast_deconv1d_matches_the_reference_on_the_signal_as_a_one_row_image(k, stride, padding, dilation, groups,
                                                                             block):
    """A 1-D window of k positions over a block of channels is the 2-D patch of a 1 x k kernel on
    the 1 x L image of the signal: the float64 reference computes that, independently."""
    conv = torch.nn.Conv1d(6, 4, k, stride=stride, padding=padding, dilation=dilation, groups=groups).double()
    layer = ndeconv.deconvolve(torch.nn.Sequential(conv), block=block, sampling_stride=2, block_fc=0)[0]
    assert type(layer) is ndeconv.FastDeconv1d
    x = (torch.randn(3, 6, 17, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    y = layer(x)
    ref, stats = reference.fast_deconv(
        x.detach().numpy()[:, :, None, :], layer.weight.detach().numpy()[:, :, None, :], layer.bias.detach().numpy(),
        stride=(1, stride), padding=(0, padding), dilation=(1, dilation), groups=groups, block=block,
        sampling_stride=2, eps=1e-5, n_iter=5)
    np.testing.assert_allclose(y.detach().numpy(), ref[:, :, 0, :], rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    _assert_running_estimates(layer, stats)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    _assert_fuses_to(layer, torch.nn.Conv1d, x)


@pytest.mark.parametrize("k, stride, padding, dilation, groups, block, s", [
    (3, 1, 1, 1, 1, 2, 2), ((1, 3, 3), (1, 2, 2), (0, 1, 1), 1, 1, 4, 1), (3, 1, 2, 2, 1, 64, 3), (3, 2, 1, 1, 4, 64, 1),
])
def test_fast_deconv3d_matches_the_float64_reference(k, stride, padding, dilation, groups, block, s):
    conv = torch.nn.Conv3d(4, 4, k, stride=stride, padding=padding, dilation=dilation, groups=groups).double()
    layer = ndeconv.FastDeconv3d.from_conv(conv, bias=True, block=block, sampling_stride=s)  # depthwise too
    assert type(layer) is ndeconv.FastDeconv3d
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = (torch.randn(2, 4, 5, 6, 7, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    y = layer(x)
    triple = lambda v: (v,) * 3 if isinstance(v, int) else v  # noqa: E731
    ref, stats = reference.fast_deconv3d(
        x.detach().numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), stride=triple(stride),
        padding=triple(padding), dilation=triple(dilation), groups=groups, block=block, sampling_stride=s)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    _assert_running_estimates(layer, stats)
    _assert_fuses_to(layer, torch.nn.Conv3d, x)


@pytest.mark.parametrize("k, stride, padding, output_padding, dilation, groups, block, s", [
    (4, 2, 1, 0, 1, 1, 2, 3), (3, 2, 1, 1, 1, 1, 64, 2), (3, 1, 0, 0, 2, 1, 3, 1), (2, 2, 0, 0, 1, 2, 64, 3),
    (3, 3, 3, 1, 1, 1, 6, 2),  # padding > d*(k-1): the direct-convolution view is cropped
])
def test_fast_deconv_transpose2d_matches_the_float64_reference(k, stride, padding, output_padding, dilation, groups,
                                                               block, s):
    conv = torch.nn.ConvTranspose2d(6, 4, k, stride=stride, padding=padding, output_padding=output_padding,
                                    groups=groups, dilation=dilation).double()
    layer = ndeconv.deconvolve(torch.nn.Sequential(conv), block=block, sampling_stride=s, block_fc=0)[0]
    assert type(layer) is ndeconv.FastDeconvTranspose2d
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = (torch.randn(2, 6, 5, 4, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    y = layer(x)
    pair = lambda v: (v, v)  # noqa: E731
    ref, stats = reference.fast_deconv_transpose2d(
        x.detach().numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), stride=pair(stride),
        padding=pair(padding), output_padding=pair(output_padding), dilation=pair(dilation), groups=groups,
        block=block, sampling_stride=s)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    _assert_running_estimates(layer, stats)
    _assert_fuses_to(layer, torch.nn.ConvTranspose2d, x)


GRADCHECK_LAYERS = {
    "FastDeconv": (lambda: ndeconv.FastDeconv(4, 3, 3, padding=1, block=2, sampling_stride=2, n_iter=3, eps=1e-2,
                                              dtype=torch.float64), (2, 4, 6, 6)),
    "FastDeconvSame_stride2": (lambda: ndeconv.FastDeconvSame(4, 3, 3, stride=2, block=2, sampling_stride=1, n_iter=3,
                                                              eps=1e-2, dtype=torch.float64), (2, 4, 7, 6)),
    "FastDeconv1d": (lambda: ndeconv.FastDeconv1d(4, 3, 3, padding=1, block=2, sampling_stride=2, n_iter=3, eps=1e-2,
                                                  dtype=torch.float64), (2, 4, 9)),
    "FastDeconv3d": (lambda: ndeconv.FastDeconv3d(4, 3, 3, padding=1, block=2, sampling_stride=2, n_iter=3, eps=1e-2,
                                                  dtype=torch.float64), (2, 4, 4, 5, 3)),
    "FastDeconvTranspose2d": (lambda: ndeconv.FastDeconvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1,
                                                                    block=2, sampling_stride=2, n_iter=3, eps=1e-2,
                                                                    dtype=torch.float64), (2, 4, 3, 4)),
}


@pytest.mark.parametrize("name", GRADCHECK_LAYERS)
def test_gradcheck_input_weight_and_bias(name):
    build, shape = GRADCHECK_LAYERS[name]
    layer = build()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    def f(inp, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (inp,))

    assert torch.autograd.gradcheck(f, (x, layer.weight.detach().requires_grad_(), layer.bias.detach().requires_grad_()))
