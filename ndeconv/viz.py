"""The paper's pictures, from real images: deconvolution kernels, patch correlations, sparsity, linear model.

The computations are functions of tensors (testable); ``plot_*`` render them to PNG with
matplotlib (Agg). Images default to the two photos bundled with scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .outputs import pyplot, save_figure

__all__ = [
    "sample_images", "patch_stats", "centre_rows", "deconv_kernels", "deconvolve_images", "run_kernels", "linear_experiment",
    "plot_kernels", "plot_correlation", "plot_sparsity", "plot_linear",
]


def sample_images() -> Tensor:
    """scikit-learn's two bundled photos (china, flower), ``(2, 3, 427, 640)`` float64 in [0, 1]."""
    from sklearn.datasets import load_sample_images

    images = np.stack(load_sample_images().images).astype(np.float64) / 255.0
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def patch_stats(images: Tensor, k: int, stride: int = 2) -> tuple[Tensor, Tensor]:
    """Mean ``(f,)`` and covariance ``(f, f)`` (float64) of the ``k x k`` patches, ``f = C*k*k`` in
    ``unfold`` order (channel, row, column), taken every ``stride`` pixels."""
    cols = F.unfold(images.double(), k, stride=stride)  # (N, f, L)
    samples = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    mean = samples.mean(0)
    centred = samples - mean
    return mean, centred.T @ centred / len(samples)


def inverse_sqrt(cov: Tensor, eps: float) -> Tensor:
    """Exact ``(cov + eps I)^(-1/2)`` by eigendecomposition (float64, for pictures)."""
    vals, vecs = torch.linalg.eigh(cov + eps * torch.eye(len(cov), dtype=cov.dtype))
    return vecs @ torch.diag(vals.clamp_min(1e-12).rsqrt()) @ vecs.T


def centre_rows(d: Tensor, c: int, kh: int, kw: int) -> Tensor:
    """The rows of a patch whitening ``d`` (``f = c*kh*kw``, unfold order) that give each channel's
    centre pixel, as ``(c, c, kh, kw)`` convolution kernels."""
    centre = torch.arange(c) * kh * kw + (kh // 2) * kw + kw // 2
    return d[centre].reshape(c, c, kh, kw)


def deconv_kernels(images: Tensor, k: int = 5, eps: float = 1e-5, stride: int = 2) -> Tensor:
    """The deconvolution kernels of ``images``: ``(C, C, k, k)``.

    Row ``c`` is the row of ``D = Cov^(-1/2)`` that produces the centre pixel of channel ``c``
    from a whole patch; applying these kernels as a convolution deconvolves the image. For
    uncorrelated input they are deltas; for natural images, centre-surround.
    """
    c = images.shape[1]
    _, cov = patch_stats(images, k, stride)
    d = inverse_sqrt(cov, eps)
    return centre_rows(d, c, k, k)


def deconvolve_images(images: Tensor, kernels: Tensor) -> Tensor:
    """``images`` (mean removed per channel) convolved with the deconvolution kernels, same size."""
    k = kernels.shape[-1]
    centred = images.double() - images.double().mean(dim=(0, 2, 3), keepdim=True)
    return F.conv2d(F.pad(centred, [k // 2] * 4, mode="reflect"), kernels.double())


def run_kernels(run_dir: str | Path) -> Tensor:
    """The first layer's learned deconvolution kernels of a trained run: ``(C, C, k, k)`` (running estimate)."""
    from .rundir import load_run_model
    from .layers import FastDeconv

    model, _ = load_run_model(run_dir)
    first = next((m for m in model.modules() if isinstance(m, FastDeconv)), None)
    if first is None:
        from .errors import RunDirError

        raise RunDirError(f"{run_dir}: the model has no deconvolution layer (trained with norm bn?)")
    c, (kh, kw) = first.block, first.kernel_size
    return centre_rows(first.running_deconv[0].double(), c, kh, kw)


def _figure(rows: int, cols: int, size: float = 2.2):
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    return plt, fig, axes


def plot_kernels(kernels: Tensor, path: str | Path, title: str) -> Path:
    """A grid of kernels: row = output channel, column = input channel (red positive, blue negative)."""
    c_out, c_in = kernels.shape[:2]
    plt, fig, axes = _figure(c_out, c_in)
    names = "RGB" if c_in == 3 else [str(i) for i in range(c_in)]
    for i in range(c_out):
        for j in range(c_in):
            kernel = kernels[i, j].numpy()
            limit = float(np.abs(kernels.numpy()).max())
            ax = axes[i][j]
            ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{names[i]} <- {names[j]}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=80, crop=True)


def plot_correlation(images: Tensor, path: str | Path, k: int = 3, eps: float = 1e-5) -> Path:
    """|correlation| of the ``C*k*k`` patch values before and after deconvolution."""
    _, cov = patch_stats(images, k)
    d = inverse_sqrt(cov, eps)
    after = d @ cov @ d

    def corr(m: Tensor) -> np.ndarray:
        s = m.diagonal().sqrt()
        return (m / s[:, None] / s[None, :]).abs().numpy()

    plt, fig, axes = _figure(1, 2, size=3.6)
    for ax, matrix, name in ((axes[0][0], corr(cov), "before"), (axes[0][1], corr(after), "after deconvolution")):
        im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"|correlation| {name}", fontsize=10)
        ax.set_xlabel(f"{k}x{k} patch value (channel, row, col)", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return save_figure(fig, path, dpi=80, tight=False, crop=True)


def plot_sparsity(images: Tensor, path: str | Path, k: int = 5, eps: float = 1e-5) -> Path:
    """An image and its deconvolved version, and the pixel-value histograms (log density) of both."""
    kernels = deconv_kernels(images, k, eps)
    out = deconvolve_images(images, kernels)
    before = (images - images.mean()) / images.std()
    after = out / out.std()
    plt, fig, axes = _figure(1, 3, size=3.4)
    axes[0][0].imshow(images[0].permute(1, 2, 0).numpy())
    axes[0][0].set_title("image", fontsize=10)
    deconv_view = out[0].abs().mean(0).numpy()
    axes[0][1].imshow(deconv_view, cmap="gray", vmax=np.percentile(deconv_view, 99.5))
    axes[0][1].set_title("deconvolved (|value|)", fontsize=10)
    for ax in axes[0][:2]:
        ax.set_xticks([]), ax.set_yticks([])
    bins = np.linspace(-8, 8, 161)
    ax = axes[0][2]
    ax.hist(before.flatten().numpy(), bins=bins, density=True, histtype="step", label="pixels", color="tab:gray")
    ax.hist(after.flatten().numpy(), bins=bins, density=True, histtype="step", label="deconvolved", color="tab:red")
    ax.set_yscale("log")
    ax.set_xlabel("value / std")
    ax.set_title("value density (log)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=80, crop=True)


def _digits_28() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits resized to 28x28 (bilinear): MNIST-sized, with correlated neighbours."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x.flatten(1), torch.from_numpy(digits.target).long()


LINEAR_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _train_linear(inputs: Tensor, y: Tensor, lr: float, epochs: int, batch: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(inputs.shape[1], int(y.max()) + 1)
    with torch.no_grad():
        model.weight.zero_(), model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(inputs[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    return history


def linear_experiment(x: Tensor | None = None, y: Tensor | None = None, epochs: int = 3, batch: int = 64,
                      lrs: tuple[float, ...] = LINEAR_LRS, eps: float = 1e-2,
                      seed: int = 0) -> dict[str, tuple[float, list[float]]]:
    """The paper's linear experiment: softmax regression on raw (standardised) vs deconvolved inputs.

    Deconvolution whitens the flattened images with ``(Cov + eps I)^(-1/2)`` of the training set.
    Both start from zero weights and see the same batches; each gets the learning rate from
    ``lrs`` with the lowest final loss (a fixed shared rate would favour one input scaling).
    Returns ``{name: (lr, training loss per iteration)}``.
    """
    if x is None:
        x, y = _digits_28()
    x = x.double()
    mean = x.mean(0)
    raw = (x - mean) / x.std()
    cov = (x - mean).T @ (x - mean) / len(x)
    whitened = (x - mean) @ inverse_sqrt(cov, eps * float(cov.diagonal().mean()))
    results = {}
    for name, inputs in (("raw", raw.float()), ("deconvolved", whitened.float())):
        runs = {lr: _train_linear(inputs, y, lr, epochs, batch, seed) for lr in lrs}
        finite = {lr: h for lr, h in runs.items() if np.isfinite(h).all()}
        best = min(finite, key=lambda lr: float(np.mean(finite[lr][-20:])))
        results[name] = (best, finite[best])
    return results


def plot_linear(losses: dict[str, tuple[float, list[float]]], path: str | Path) -> Path:
    """Training loss per iteration of :func:`linear_experiment`, log scale."""
    plt, fig, axes = _figure(1, 1, size=4.2)
    ax = axes[0][0]
    for name, color in (("raw", "tab:gray"), ("deconvolved", "tab:red")):
        lr, history = losses[name]
        ax.plot(history, label=f"{name} (best lr {lr:g})", color=color, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("linear classifier, 28x28 digits", fontsize=10)
    ax.legend()
    return save_figure(fig, path, dpi=80, crop=True)


def plot_segmentation(runs: dict[str, Path], path: str | Path, n: int = 4) -> Path:
    """The first ``n`` validation images of segmentation runs: image, true mask and each run's
    prediction (``{label: run_dir}``, e.g. BN and ND); unlabelled pixels black."""
    from .rundir import load_run_model
    from .segmentation.loaders import make_segmentation_dataloaders

    models = {label: load_run_model(run) for label, run in runs.items()}
    recipe = next(iter(models.values()))[1]
    images, masks = next(iter(make_segmentation_dataloaders(recipe, device="cpu").valid))
    images, masks = images[:n], masks[:n]
    with torch.no_grad():
        preds = {label: model.eval()(images).argmax(1) for label, (model, _) in models.items()}
    classes, ignore = recipe.data.num_classes, recipe.data.ignore_index
    mean = torch.tensor(recipe.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(recipe.data.std).view(1, -1, 1, 1)
    shown = (images * std + mean).clamp(0, 1)
    plt, fig, axes = _figure(len(images), 2 + len(preds))
    cmap = plt.get_cmap("tab20", max(classes, 2)).copy()
    cmap.set_bad("black")
    for i in range(len(images)):
        picture = shown[i].permute(1, 2, 0).squeeze(-1).numpy()
        panels = [("image", None), ("true mask", masks[i])] + [(label, p[i]) for label, p in preds.items()]
        for j, (title, mask) in enumerate(panels):
            ax = axes[i][j]
            if mask is None:
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            else:
                ax.imshow(np.ma.masked_equal(mask.numpy(), ignore), cmap=cmap, vmin=0, vmax=classes - 1,
                          interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=80, crop=True)
