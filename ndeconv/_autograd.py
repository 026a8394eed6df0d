"""The hand-written autograd of :mod:`ndeconv.functional`: patch gathering with a scatter backward,
mean and covariance with the symmetric backward (and their all-reduced twin), and the
Newton-Schulz iteration, spectrally on CPU where that is faster. Private: the functions of
``ndeconv.functional`` are the interface; these are what they run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["PatchGeometry", "ConvPatchSamples", "WhiteningStats", "SyncWhiteningStats", "NewtonSchulz", "gram",
           "samples_grad", "newton_schulz_steps", "newton_schulz_spectrum", "newton_schulz_scalar", "GRAM_STRIP",
           "SPECTRAL_MIN_F"]


class PatchGeometry(tuple):
    """``(kernel, dilation, padding, stride, groups, block)`` of a patch extraction."""

    def __new__(cls, kernel, dilation, padding, stride, groups, block):
        return super().__new__(cls, (kernel, dilation, padding, stride, groups, block))

    def disjoint(self) -> bool:
        """Whether the sampled windows never overlap (then the backward is a plain scatter)."""
        kernel, dilation, _, stride, _, _ = self
        return all(s >= d * (k - 1) + 1 for k, d, s in zip(kernel, dilation, stride))


class ConvPatchSamples(torch.autograd.Function):
    """im2col + regrouping (a strided window view when a conv group is one column group), with a
    scatter backward instead of ``col2im`` for disjoint windows."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: PatchGeometry) -> Tensor:
        kernel, dilation, padding, stride, groups, block = geometry
        f = block * kernel[0] * kernel[1]
        ctx.geometry, ctx.input_shape = geometry, x.shape
        ctx.positions = [
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, d, p, s in zip(x.shape[2:], kernel, dilation, padding, stride)
        ]
        if x.shape[1] == groups * block:  # one column group: a window view, copied once
            windows = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
            for axis, (k, d, s) in enumerate(zip(kernel, dilation, stride)):
                windows = windows.unfold(2 + axis, d * (k - 1) + 1, s)
            windows = windows[..., :: dilation[0], :: dilation[1]]  # (n, C, lh, lw, kh, kw)
            windows = windows.unflatten(1, (groups, block)).permute(1, 0, 3, 4, 2, 5, 6)
            return windows.reshape(groups, -1, f)
        patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
        n, cols, positions = patches.shape
        patches = patches.view(n, groups, f, cols // groups // f, positions)
        return patches.permute(1, 0, 4, 3, 2).reshape(groups, -1, f)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        kernel, dilation, padding, stride, groups, block = ctx.geometry
        n, channels, height, width = ctx.input_shape
        lh, lw = ctx.positions
        f = block * kernel[0] * kernel[1]
        per_group_blocks = channels // groups // block
        # (g, n, L, G, f) -> (n, g, f, G, L): the unfold layout, as a strided view.
        cols = grad.view(groups, n, lh * lw, per_group_blocks, f).permute(1, 0, 4, 3, 2)
        if not ctx.geometry.disjoint():
            cols = cols.reshape(n, channels * kernel[0] * kernel[1], lh * lw)
            return F.fold(cols, (height, width), kernel, dilation=dilation, padding=padding, stride=stride), None
        padded = grad.new_zeros(n, channels, height + 2 * padding[0], width + 2 * padding[1])
        sn, sc, sh, sw = padded.stride()
        windows = padded.as_strided(
            (n, channels, kernel[0], kernel[1], lh, lw),
            (sn, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh, stride[1] * sw),
        )
        windows.copy_(cols.reshape(n, channels, kernel[0], kernel[1], lh, lw))
        return padded[:, :, padding[0] : padding[0] + height, padding[1] : padding[1] + width], None


class WhiteningStats(torch.autograd.Function):
    """Mean and covariance with the symmetric backward ``dX = Sc (G + G^T) / m + g_mu / m``.

    (Autograd would run two large products, one per factor of ``Sc^T Sc``; the centring's own
    gradient vanishes because the centred samples sum to zero.)
    """

    @staticmethod
    def forward(ctx, samples: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        m = samples.shape[1]
        mean = samples.mean(dim=1)
        centred = samples - mean.unsqueeze(1)
        cov = gram(centred).div_(m)
        cov.diagonal(dim1=1, dim2=2).add_(eps)
        ctx.save_for_backward(centred)
        return mean, cov

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor | None, grad_cov: Tensor | None) -> tuple[Tensor, None]:
        (centred,) = ctx.saved_tensors
        return samples_grad(centred, grad_mean, grad_cov, centred.shape[1]), None


#: Column strip width of :func:`gram` (wider matrices are multiplied by strips).
GRAM_STRIP = 144


def gram(x: Tensor) -> Tensor:
    """``x^T x`` of ``x`` ``(g, m, f)``, computing only its upper triangle of ``GRAM_STRIP``-wide
    blocks and mirroring it: about ``(k + 1) / 2k`` of the product's work for ``k`` strips (CPU;
    on accelerators one product)."""
    f = x.shape[-1]
    k = max(1, round(f / GRAM_STRIP))
    if k == 1 or x.device.type != "cpu":
        return torch.bmm(x.transpose(1, 2), x)
    out = x.new_empty(x.shape[0], f, f)
    edges = [f * i // k for i in range(k + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        strip = torch.bmm(x[:, :, lo:hi].transpose(1, 2), x[:, :, lo:])
        out[:, lo:hi, lo:] = strip
        out[:, hi:, lo:hi] = strip[:, :, hi - lo:].transpose(1, 2)
    return out


def samples_grad(centred: Tensor, grad_mean: Tensor | None, grad_cov: Tensor | None, count: float) -> Tensor:
    """Gradient of the samples from those of the mean and covariance: ``Sc (G + G^T) / n + g_mu / n``,
    ``n`` the number of samples the statistics were taken over."""
    base = centred.new_zeros(()) if grad_mean is None else (grad_mean / count).unsqueeze(1)
    if grad_cov is None:
        return base.expand_as(centred).clone()
    sym = grad_cov + grad_cov.transpose(1, 2)
    return torch.baddbmm(base.expand_as(centred), centred, sym, alpha=1.0 / count)


class SyncWhiteningStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, samples: Tensor, eps: float, group: object | None) -> tuple[Tensor, Tensor]:
        import torch.distributed as dist

        g, m, f = samples.shape
        sums = torch.cat([samples.sum(dim=1).flatten(), samples.new_tensor([m])])
        dist.all_reduce(sums, group=group)
        total = sums[-1]
        mean = (sums[:-1] / total).view(g, f)
        centred = samples - mean.unsqueeze(1)
        cross = gram(centred)
        dist.all_reduce(cross, group=group)
        eye = torch.eye(f, dtype=samples.dtype, device=samples.device)
        cov = cross / total + eps * eye
        ctx.save_for_backward(centred, total)
        ctx.group = group
        return mean, cov

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor | None, grad_cov: Tensor | None) -> tuple[Tensor, None, None]:
        import torch.distributed as dist

        centred, total = ctx.saved_tensors
        g, _, f = centred.shape
        grad_mean = centred.new_zeros(g, f) if grad_mean is None else grad_mean
        grad_cov = centred.new_zeros(g, f, f) if grad_cov is None else grad_cov
        flat = torch.cat([grad_mean.flatten(), grad_cov.flatten()])
        dist.all_reduce(flat, group=ctx.group)
        grad_mean, grad_cov = flat[: g * f].view(g, f), flat[g * f:].view(g, f, f)
        return samples_grad(centred, grad_mean, grad_cov, float(total)), None, None


def newton_schulz_steps(y: Tensor, n_iter: int) -> Tensor:
    """``Z`` after ``n_iter`` coupled steps from ``(Y, I)``; the first step (``Z = I``) and the
    unused last ``Y`` update are skipped: the same values with fewer matmuls."""
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    t = 1.5 * eye - 0.5 * y
    z = t
    for _ in range(1, n_iter):
        y = y @ t
        t = 1.5 * eye - 0.5 * (z @ y)
        z = t @ z
    return z


def newton_schulz_spectrum(evals: Tensor, n_iter: int) -> tuple[Tensor, Tensor]:
    """The scalar map ``p: y0 -> z_n`` of the iteration on ``evals`` ``(..., f)``, and its first
    divided differences ``(p(a) - p(b)) / (a - b)`` ``(..., f, f)``.

    Propagated through the iteration with the product rule ``(uv)[a,b] = u(a) v[a,b] + u[a,b] v(b)``,
    so equal or close eigenvalues need no division (the diagonal is ``p'(a)``).
    """
    y_a, y_b = evals.unsqueeze(-1), evals.unsqueeze(-2)
    y_ab = torch.ones_like(y_a * y_b)
    z_a, z_b, z_ab = torch.ones_like(y_a), torch.ones_like(y_b), torch.zeros_like(y_ab)
    for _ in range(n_iter):
        t_a, t_b = 1.5 - 0.5 * z_a * y_a, 1.5 - 0.5 * z_b * y_b
        t_ab = -0.5 * (z_a * y_ab + z_ab * y_b)
        y_ab = y_a * t_ab + y_ab * t_b
        z_ab = t_a * z_ab + t_ab * z_b
        y_a, y_b, z_a, z_b = y_a * t_a, y_b * t_b, t_a * z_a, t_b * z_b
    return z_a.squeeze(-1), z_ab


def eigh_or_none(y: Tensor) -> tuple[Tensor, Tensor] | None:
    try:
        return torch.linalg.eigh(y)
    except torch.linalg.LinAlgError:
        return None


#: Smallest ``f`` for which one ``eigh`` beats the matrix iteration on CPU (2 threads, 5 steps),
#: with a gradient (the backward's replay is the iteration's cost again) and without.
SPECTRAL_MIN_F = {True: 48, False: 384}


def newton_schulz_scalar(evals: Tensor, n_iter: int) -> Tensor:
    """The iteration's scalar map ``p: y0 -> z_n`` at each of ``evals``."""
    y, z = evals, torch.ones_like(evals)
    for _ in range(n_iter):
        t = 1.5 - 0.5 * z * y
        y, z = y * t, t * z
    return z


class NewtonSchulz(torch.autograd.Function):
    """Newton-Schulz steps on a normalised SPD batch, spectrally on CPU where that is faster.

    Every iterate is a polynomial in ``Y``, so for ``Y = U diag(l) U^T`` the result is
    ``U diag(p(l)) U^T`` and the adjoint of the step map is ``U (P o U^T G U) U^T`` with ``P`` the
    divided differences of ``p`` (Daleckii-Krein). On CPU one ``eigh`` serves both: the forward
    then costs ``eigh`` and one product instead of ``3 n_iter - 2`` matmuls, and the backward four
    matmuls. Small matrices (see ``SPECTRAL_MIN_F``), accelerators (where ``eigh`` is slow) and
    a failed ``eigh`` take the matrix iteration (its backward replays it under autograd).
    """

    @staticmethod
    def forward(ctx, y: Tensor, n_iter: int) -> Tensor:
        ctx.n_iter = n_iter
        needs_grad = ctx.needs_input_grad[0]
        spectral = y.device.type == "cpu" and y.shape[-1] >= SPECTRAL_MIN_F[needs_grad]
        decomposed = eigh_or_none(y) if spectral else None
        if decomposed is None:
            ctx.save_for_backward(y)
            return newton_schulz_steps(y, n_iter)
        evals, evecs = decomposed
        if needs_grad:
            p, dd = newton_schulz_spectrum(evals, n_iter)
            ctx.save_for_backward(evecs, dd)
        else:
            p = newton_schulz_scalar(evals, n_iter)
        return (evecs * p.unsqueeze(-2)) @ evecs.transpose(-1, -2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if len(ctx.saved_tensors) == 2:
            evecs, dd = ctx.saved_tensors
            inner = evecs.transpose(-1, -2) @ grad @ evecs
            return evecs @ (dd * inner) @ evecs.transpose(-1, -2), None
        (y,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = y.detach().requires_grad_()
            (grad_y,) = torch.autograd.grad(newton_schulz_steps(leaf, ctx.n_iter), leaf, grad)
        return grad_y, None
