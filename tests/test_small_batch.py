"""Deconvolution at batches too small for its covariances: every position sampled, then shrinkage
towards the diagonal, against the float64 reference (tests/reference.py), forward and backward."""

import numpy as np
import pytest
import torch

import ndeconv
from ndeconv import functional as DF

import reference
from layer_check import check_training_step


@pytest.mark.parametrize("m, f", [(1, 4), (2, 6), (5, 9), (40, 12), (300, 5)])
def test_diagonal_shrinkage_matches_its_definition(m, f):
    gen = torch.Generator().manual_seed(m * 100 + f)
    mixing = torch.randn(f, f, dtype=torch.float64, generator=gen)
    samples = torch.randn(2, m, f, dtype=torch.float64, generator=gen) @ mixing + 0.3
    got = DF.diagonal_shrinkage(samples)
    expected = [reference.diagonal_shrinkage(s) for s in samples.numpy()]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert got.shape == (2,) and ((got >= 0) & (got <= 1)).all()


def test_shrinkage_is_large_for_noise_and_small_for_well_estimated_correlations():
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(8, 8, dtype=torch.float64, generator=gen)
    few = torch.randn(1, 4, 8, dtype=torch.float64, generator=gen) @ mixing
    many = torch.randn(1, 20000, 8, dtype=torch.float64, generator=gen) @ mixing
    assert float(DF.diagonal_shrinkage(few)) > 0.3
    assert float(DF.diagonal_shrinkage(many)) < 0.01
    cov = torch.tensor([[[2.0, 1.0], [1.0, 3.0]]], dtype=torch.float64)
    torch.testing.assert_close(DF.shrink_to_diagonal(cov, torch.tensor([0.25])),
                               torch.tensor([[[2.0, 0.75], [0.75, 3.0]]], dtype=torch.float64))


# (in, out, kernel, padding, block, sampling_stride, hw, batch): rows at the stride fewer than f
SMALL = [
    dict(cin=8, cout=4, k=3, padding=1, block=8, s=3, hw=(6, 5), n=1),  # 4 rows, then 30, for f = 72
    dict(cin=4, cout=3, k=3, padding=1, block=4, s=3, hw=(5, 5), n=2),  # 8 rows, then 50 >= f = 36: no shrinkage
    dict(cin=16, cout=4, k=3, padding=0, block=8, s=2, hw=(4, 4), n=2),  # 1 position x 2 images x 2 column
    # groups = 4 rows, then 16, for f = 72
]


def _layer(g, small_batch=True):
    layer = ndeconv.FastDeconv(g["cin"], g["cout"], g["k"], padding=g["padding"], block=g["block"],
                               sampling_stride=g["s"], small_batch=small_batch, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    return layer


def _reference(g, x, w, b, small_batch=True):
    return reference.fast_deconv(x, w, b, padding=(g["padding"],) * 2, block=g["block"], sampling_stride=g["s"],
                                 eps=1e-5, n_iter=5, small_batch=small_batch)


@pytest.mark.parametrize("g", SMALL, ids=["batch1", "batch2_stride_only", "batch2_groups"])
def test_small_batch_layer_matches_the_float64_reference(g):
    gen = torch.Generator().manual_seed(1)
    layer = _layer(g)
    x = (torch.randn(g["n"], g["cin"], *g["hw"], dtype=torch.float64, generator=gen) * 2 + 0.5).requires_grad_()
    check_training_step(layer, x, lambda *args: _reference(g, *args), gen)
    layer.eval()
    with torch.no_grad():
        evaluated = layer(x.detach())
        torch.testing.assert_close(layer.fused()(x.detach()), evaluated)
    assert torch.isfinite(evaluated).all()


def test_without_small_batch_the_layer_keeps_the_papers_estimate():
    g = SMALL[0]
    x = torch.randn(1, g["cin"], *g["hw"], dtype=torch.float64) + 0.5
    paper, adapted = _layer(g, small_batch=False), _layer(g)
    adapted.load_state_dict(paper.state_dict())
    w, b = paper.weight.detach().numpy(), paper.bias.detach().numpy()
    expected = _reference(g, x.numpy(), w, b, small_batch=False)[0]
    np.testing.assert_allclose(paper(x).detach().numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert not torch.allclose(adapted(x), paper(x), rtol=1e-3)
    assert "small_batch=False" in repr(paper) and "small_batch" not in repr(adapted)


def test_the_setting_reaches_every_conv_layer_of_a_converted_model():
    import timm

    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), small_batch=False)
    layers = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)]
    assert layers and not any(m.small_batch for m in layers)
    assert all(m.small_batch for m in ndeconv.deconvolve(timm.create_model("vgg11_cifar")).modules()
               if isinstance(m, ndeconv.FastDeconv))
