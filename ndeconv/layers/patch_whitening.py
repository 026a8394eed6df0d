"""``PatchWhitening``: a first layer whose filters whiten the image's patches, computed once from data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchWhitening(nn.Conv2d):
    """A ``k x k`` convolution (no padding) whose ``2 f`` filters, ``f = C k^2``, whiten the image's
    ``k x k`` patches: the eigenvectors ``v_i`` of their covariance scaled by ``1 / sqrt(l_i + eps)``,
    each with both signs (so a ReLU or GELU after it keeps both halves of every direction).

    This is the first layer of the CIFAR-10 speed-record networks, and network deconvolution's
    stem frozen at an estimate from data: :meth:`fit` computes it from a batch of (normalised)
    training images, after which the weight stays fixed (it is not a trained parameter); the bias
    trains, for the first ``bias_epochs`` epochs of a run only (``None``: throughout; see
    :class:`ndeconv.train.callbacks.PatchWhiteningCallback`, which fits it before training).
    ``fitted`` says whether it holds an estimate: a resumed run keeps the one it has.
    """

    fitted: Tensor

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4, bias_epochs: int | None = 3,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        width = in_channels * kernel_size * kernel_size
        super().__init__(in_channels, 2 * width, kernel_size, bias=True, device=device, dtype=dtype)
        self.eps, self.bias_epochs = float(eps), bias_epochs
        self.weight.requires_grad_(False)
        with torch.no_grad():
            self.bias.zero_()
        self.register_buffer("fitted", torch.tensor(False, device=device))

    def reset_parameters(self) -> None:
        """The weight stays what :meth:`fit` made it (or the default until then); the bias starts at zero."""
        if not hasattr(self, "fitted"):  # nn.Conv2d's constructor: its default initialisation
            super().reset_parameters()
        elif self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        """Set the filters from ``images`` ``(n, C, H, W)``: every ``k x k`` patch of every image (in
        ``unfold`` order: channel, then row, then column) is a sample of the covariance whose
        eigenvectors, scaled by ``1 / sqrt(eigenvalue + eps)`` in decreasing order of eigenvalue,
        become the first ``f`` filters and their negatives the last ``f``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"PatchWhitening.fit expects (N, {self.in_channels}, H, W) images, "
                             f"got {tuple(images.shape)}")
        width = self.weight[0].numel()
        patches = F.unfold(images.to(torch.float64), self.kernel_size).transpose(1, 2).reshape(-1, width)
        centred = patches - patches.mean(0)
        evals, evecs = torch.linalg.eigh(centred.T @ centred / len(centred))
        evals, evecs = evals.flip(0), evecs.flip(1)
        filters = (evecs / torch.sqrt(evals.clamp(min=0) + self.eps)).T
        self.weight.copy_(torch.cat([filters, -filters]).view_as(self.weight))
        self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}, bias_epochs={self.bias_epochs}"
