"""One training step of a deconvolution layer against a float64 reference function: output, the
running estimates it moved, and the gradients to input and weight by central differences."""

import numpy as np
import pytest
import torch


def check_training_step(layer: torch.nn.Module, x: torch.Tensor, reference_fn, gen: torch.Generator) -> None:
    """``layer(x)`` (momentum 0.1, fresh running estimates) against ``reference_fn(x, w, b) -> (y,
    [(mu, D) per group])`` in NumPy; the gradients of a random projection of the output against
    the reference's central differences along random directions."""
    y = layer(x)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    expected, stats = reference_fn(x.detach().numpy(), w, b)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    for grp, (mu, deconv) in enumerate(stats):  # the running estimates move towards what the batch used
        np.testing.assert_allclose(layer.running_mean[grp].numpy(), 0.1 * mu, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(layer.running_deconv[grp].numpy(), 0.1 * deconv + 0.9 * np.eye(len(deconv)),
                                   rtol=1e-6, atol=1e-9)
    grad_out = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(grad_out)
    h = 1e-5
    for name, grad, point in (("input", x.grad, x.detach().numpy()), ("weight", layer.weight.grad, w)):
        direction = torch.randn(point.shape, dtype=torch.float64, generator=gen).numpy()

        def value(t):
            moved = point + t * direction
            args = (moved, w, b) if name == "input" else (x.detach().numpy(), moved, b)
            return float((reference_fn(*args)[0] * grad_out.numpy()).sum())

        expected_d = (value(h) - value(-h)) / (2 * h)
        assert float((grad.numpy() * direction).sum()) == pytest.approx(expected_d, rel=1e-6, abs=1e-9), name
