"""``samples_per_dim``: conv layers sample large feature maps more sparsely, keeping enough samples
per dimension of the covariance; against the float64 reference (tests/reference.py), forward and
backward, and the stride rule against counting the samples of every stride."""

import math

import numpy as np
import pytest
import timm
import torch

import ndeconv
from ndeconv import functional as DF
from ndeconv.errors import RecipeError
from ndeconv.recipe import load_recipe

import reference
from layer_check import check_training_step


@pytest.mark.parametrize("seed", range(40))
def test_the_stride_rule_is_the_coarsest_that_keeps_enough_samples(seed):
    gen = np.random.default_rng(seed)
    positions = tuple(int(p) for p in gen.integers(1, 40, size=int(gen.integers(1, 4))))
    per_position, f = int(gen.integers(1, 64)), int(gen.integers(1, 600))
    per_dim, base = int(gen.integers(1, 128)), int(gen.integers(1, 5))

    def count(s):
        return per_position * math.prod(len(range(0, p, s)) for p in positions)

    enough = [s for s in range(base, max(positions) + 1) if count(s) >= per_dim * f]
    assert DF.coarsest_sampling_stride(positions, per_position, f, per_dim, base) == max(enough, default=base)


def test_the_output_sizes_are_the_convolutions():
    x = torch.zeros(1, 1, 17, 12)
    for k, s, p, d in [(3, 1, 1, 1), (3, 2, 1, 1), (5, 3, 0, 2), (1, 2, 0, 1)]:
        size = DF.conv_output_size(x.shape[2:], (k, k), (s, s), (p, p), (d, d))
        assert size == tuple(torch.nn.functional.conv2d(x, torch.zeros(1, 1, k, k), None, s, p, d).shape[2:])
        for q in range(s):  # every output padding the stride allows
            size = DF.conv_transpose_output_size(x.shape[2:], (k, k), (s, s), (p, p), (q, q), (d, d))
            assert size == tuple(torch.nn.functional.conv_transpose2d(x, torch.zeros(1, 1, k, k), None, s, p, q, 1,
                                                                      d).shape[2:])


# (in, out, kernel, stride, padding, block, sampling stride, samples per dim, hw, batch, stride chosen)
CASES = [
    dict(cin=4, cout=3, k=3, stride=1, padding=1, block=2, s=1, r=4, hw=(9, 9), n=2, chosen=2),
    dict(cin=4, cout=2, k=3, stride=2, padding=1, block=2, s=1, r=2, hw=(15, 14), n=2, chosen=3),
    dict(cin=2, cout=2, k=3, stride=1, padding=0, block=2, s=2, r=1, hw=(15, 15), n=1, chosen=3),
]


@pytest.mark.parametrize("g", CASES, ids=["stride1", "strided_conv", "unpadded"])
def test_the_layer_matches_the_float64_reference(g):
    gen = torch.Generator().manual_seed(3)
    layer = ndeconv.FastDeconv(g["cin"], g["cout"], g["k"], stride=g["stride"], padding=g["padding"],
                               block=g["block"], sampling_stride=g["s"], samples_per_dim=g["r"], dtype=torch.float64)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = (torch.randn(g["n"], g["cin"], *g["hw"], dtype=torch.float64, generator=gen) * 2 + 0.5).requires_grad_()
    positions = DF.conv_output_size(g["hw"], (g["k"],) * 2, (g["stride"],) * 2, (g["padding"],) * 2, (1, 1))
    assert layer._sampling_stride_for(g["n"], positions) == g["chosen"] > g["s"]  # the setting changes the samples

    def expected(x, w, b):
        return reference.fast_deconv(x, w, b, stride=(g["stride"],) * 2, padding=(g["padding"],) * 2,
                                     block=g["block"], sampling_stride=g["s"], samples_per_dim=g["r"])

    check_training_step(layer, x, expected, gen)
    paper = reference.fast_deconv(x.detach().numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                  stride=(g["stride"],) * 2, padding=(g["padding"],) * 2, block=g["block"],
                                  sampling_stride=g["s"])[0]
    assert not np.allclose(layer(x).detach().numpy(), paper, rtol=1e-4)  # not the base stride's statistics


def test_the_transposed_layer_matches_the_float64_reference():
    gen = torch.Generator().manual_seed(4)
    layer = ndeconv.FastDeconvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, block=1,
                                          sampling_stride=1, samples_per_dim=9, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = (torch.randn(2, 4, 5, 4, dtype=torch.float64, generator=gen) + 0.3).requires_grad_()
    # the output is 10 x 8: 4 x 3 positions x 8 samples >= 9 x 9 at stride 3; 3 x 2 x 8 at 4 is not, nor
    # 3 x 3 x 8 at 3 if the output padding were left out of the output's size
    assert layer._sampling_stride_for(2, (10, 8)) == 3 and layer._sampling_stride_for(2, (9, 7)) == 2

    def expected(x, w, b):
        return reference.fast_deconv_transpose2d(x, w, b, stride=(2, 2), padding=(1, 1), output_padding=(1, 1),
                                                 block=1, sampling_stride=1, samples_per_dim=9)

    check_training_step(layer, x, expected, gen)


def test_the_one_dimensional_layer_samples_its_one_axis():
    gen = torch.Generator().manual_seed(5)
    layer = ndeconv.FastDeconv1d(2, 3, 3, padding=1, block=2, sampling_stride=1, samples_per_dim=2,
                                 dtype=torch.float64)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = (torch.randn(3, 2, 20, dtype=torch.float64, generator=gen) + 0.2).requires_grad_()
    assert layer._sampling_stride_for(3, (20,)) == 6  # 4 positions x 3 images >= 2 x 6; 3 x 3 is not

    def expected(x, w, b):
        y, stats = reference.fast_deconv(x[:, :, None], w[:, :, None], b, padding=(0, 1), block=2,
                                         sampling_stride=1, samples_per_dim=2)
        return y[:, :, 0], stats

    check_training_step(layer, x, expected, gen)


def test_eval_and_fuse_use_the_running_estimates():
    layer = ndeconv.FastDeconv(4, 3, 3, padding=1, block=2, sampling_stride=1, samples_per_dim=4,
                               dtype=torch.float64)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64) + 0.5
    layer(x)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer.fused()(x), layer(x))
    assert "samples_per_dim=4" in repr(layer) and "samples_per_dim" not in repr(ndeconv.FastDeconv(4, 3, 3))


def test_the_setting_reaches_the_conv_layers_from_a_keyword_and_a_recipe(tmp_path):
    model = ndeconv.deconvolve(timm.create_model("vgg11_cifar", num_classes=10), samples_per_dim=32)
    stem, *layers = [m for m in model.modules() if isinstance(m, ndeconv.FastDeconv)]
    assert layers and all(m.samples_per_dim == 32 for m in layers)
    assert stem.samples_per_dim is None and stem.sampling_stride == 3  # the stem keeps the paper's sampling
    recipe = load_recipe("cifar10", overrides={"model.deconv.samples_per_dim": 16})
    assert recipe.model.deconv.samples_per_dim == 16
    for bad in (0, -3):
        with pytest.raises(RecipeError, match=f"model.deconv.samples_per_dim must be >= 1, got {bad}"):
            load_recipe("cifar10", overrides={"model.deconv.samples_per_dim": bad})
    with pytest.raises(RecipeError, match="^samples_per_dim must be >= 1, got 0$"):
        ndeconv.FastDeconv(4, 3, 3, samples_per_dim=0)
