"""The math of network deconvolution as pure functions (``docs/method.md`` states it for a reader).

Every whitening layer follows the same four steps, each a function here:

1. arrange its input into ``samples`` of shape ``(g, m, f)``: ``g`` independent statistics
   groups, ``m`` samples of an ``f``-dimensional distribution (:func:`conv_patch_samples`,
   :func:`conv_transpose_patch_samples`, :func:`linear_samples`);
2. estimate their mean and covariance (:func:`whitening_stats`);
3. take the inverse square root of the covariance (:func:`isqrt_newton_schulz`);
4. fold the whitening into the next weight instead of whitening the data
   (:func:`fold_whitening`), so the layer stays one convolution / matmul.

The layers in :mod:`ndeconv.layers` only hold parameters and running estimates and call these.
Floor: the bottom one; it imports torch only.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "resolve_block",
    "same_padding",
    "conv_patch_samples",
    "conv_transpose_patch_samples",
    "linear_samples",
    "transposed_as_conv_weight",
    "conv_as_transposed_weight",
    "conv_weight_blocks",
    "conv_weight_unblocks",
    "whitening_stats",
    "sync_whitening_stats",
    "channel_moments",
    "isqrt_newton_schulz",
    "isqrt_newton_schulz_warm",
    "fold_whitening",
    "fold_conv",
    "fold_linear",
    "fast_deconv2d",
]


def resolve_block(block: int, channels: int) -> int:
    """Channels whitened together: ``block``, or ``channels`` if larger, or ``gcd`` if it does not divide."""
    if block < 1:
        raise ValueError(f"block must be a positive integer, got {block}")
    if block >= channels:
        return channels
    return block if channels % block == 0 else math.gcd(block, channels)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def same_padding(size: Sequence[int], kernel_size: int | Sequence[int], stride: int | Sequence[int],
                 dilation: int | Sequence[int] = 1) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of TensorFlow's "SAME" convolution on an input of
    spatial ``size`` (H, W): the output has ``ceil(size / stride)`` positions and the odd pixel of
    padding goes after. Works for any stride, unlike ``padding="same"`` in PyTorch."""
    pads = []
    for n, k, s, d in zip(size, _pair(kernel_size), _pair(stride), _pair(dilation)):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def _check_block(per_group: int, block: int) -> None:
    if per_group % block:
        raise ValueError(f"block {block} does not divide the {per_group} channels of a conv group")


def _split_columns(rows: Tensor, f: int) -> Tensor:
    """Patch rows ``(g, m, G*f)`` as ``(g, m*G, f)`` samples, column group ``q`` taking columns
    ``q, q+G, q+2G, ...`` of each row (the paper's block grouping)."""
    g, m, cols = rows.shape
    return rows.reshape(g, m, f, cols // f).transpose(2, 3).reshape(g, -1, f)


def conv_patch_samples(x: Tensor, kernel_size: int | Sequence[int], *, block: int, groups: int = 1,
                       stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                       dilation: int | Sequence[int] = 1, sampling_stride: int = 1) -> Tensor:
    """The im2col patches a convolution sees, grouped as the paper's code groups them.

    ``x`` is ``(n, C, H, W)`` (a ``Conv2d``'s input) or ``(n, C, D, H, W)`` (a ``Conv3d``'s).
    Patches are taken at every ``sampling_stride``-th output position (along each axis). Within
    each conv group of ``C`` channels, a patch row of ``C * prod(kernel)`` values (channel-major,
    then the kernel's axes) is split into ``G = C / block`` groups of ``f = block * prod(kernel)``
    values, group ``q`` taking columns ``q, q+G, q+2G, ...``; every group of every row is one
    sample. Returns ``(groups, n*G, f)``; the gradient flows back to ``x``.
    """
    _check_block(x.shape[1] // groups, block)
    if x.dim() == 5:
        return _conv3d_patch_samples(x, _triple(kernel_size), block, groups, _triple(stride), _triple(padding),
                                     _triple(dilation), sampling_stride)
    geometry = _PatchGeometry(
        _pair(kernel_size), _pair(dilation), _pair(padding),
        tuple(s * sampling_stride for s in _pair(stride)), groups, block,
    )
    return _ConvPatchSamples.apply(x, geometry)


def _conv3d_patch_samples(x: Tensor, kernel: tuple[int, int, int], block: int, groups: int, step: tuple[int, ...],
                          pad: tuple[int, ...], dil: tuple[int, ...], sampling_stride: int) -> Tensor:
    """:func:`conv_patch_samples` of a 5-d input, from strided windows of the padded input."""
    per_group = x.shape[1] // groups
    windows = F.pad(x, [p for p in reversed(pad) for _ in range(2)])
    for axis, (k, d, s) in enumerate(zip(kernel, dil, step)):
        windows = windows.unfold(2 + axis, d * (k - 1) + 1, s * sampling_stride)
    windows = windows[..., :: dil[0], :: dil[1], :: dil[2]]  # (n, C, oD, oH, oW, kd, kh, kw)
    n = x.shape[0]
    rows = windows.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(n, -1, groups, per_group * math.prod(kernel))
    return _split_columns(rows.permute(2, 0, 1, 3).reshape(groups, -1, rows.shape[-1]), block * math.prod(kernel))


def conv_transpose_patch_samples(x: Tensor, kernel_size: int | Sequence[int], *, block: int, groups: int = 1,
                                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                                 output_padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                                 sampling_stride: int = 1) -> Tensor:
    """The patches a ``ConvTranspose2d`` weight multiplies, grouped as :func:`conv_patch_samples` does.

    Output pixel ``(u, v)`` of a transposed conv is ``sum W[c, o, a, b] * P[c, a, b]`` with
    ``P[c, a, b] = x[c, (u + p - a*d) / s, (v + p - b*d) / s]`` where that index is a whole number
    inside the input, else 0. ``P`` (channel-major, then ``a``, ``b``: the weight's own layout) is
    the patch, taken at every ``sampling_stride``-th output position. It is gathered as the
    direct convolution view: the input with ``s - 1`` zeros between pixels, padded by
    ``d*(k-1) - p`` (plus ``output_padding`` after), read by reversed windows. Returns
    ``(groups, n*G, f)``, ``f = block*kh*kw``.
    """
    kernel, dil, pad, step, extra = (_pair(v) for v in (kernel_size, dilation, padding, stride, output_padding))
    n, channels, height, width = x.shape
    per_group = channels // groups
    _check_block(per_group, block)
    spread = x.new_zeros(n, channels, (height - 1) * step[0] + 1, (width - 1) * step[1] + 1)
    spread[:, :, :: step[0], :: step[1]] = x
    edges = [d * (k - 1) - p for k, d, p in zip(kernel, dil, pad)]
    spread = F.pad(spread, (edges[1], edges[1] + extra[1], edges[0], edges[0] + extra[0]))
    patches = conv_patch_samples(spread, kernel, block=per_group, groups=groups, dilation=dil,
                                 sampling_stride=sampling_stride)
    m = patches.shape[1]
    rows = patches.view(groups, m, per_group, *kernel).flip(-2, -1).reshape(groups, m, -1)
    return _split_columns(rows, block * kernel[0] * kernel[1])


def transposed_as_conv_weight(weight: Tensor, groups: int) -> Tensor:
    """A ``ConvTranspose2d`` weight ``(C_in, C_out/g, kh, kw)`` as ``(C_out, C_in/g, kh, kw)``, row ``o``
    holding what output ``o`` multiplies its patch with (no flip: the patch is in weight order)."""
    cin, cout_g = weight.shape[:2]
    w = weight.reshape(groups, cin // groups, cout_g, *weight.shape[2:]).transpose(1, 2)
    return w.reshape(groups * cout_g, cin // groups, *weight.shape[2:])


def conv_as_transposed_weight(weight: Tensor, groups: int) -> Tensor:
    """Inverse of :func:`transposed_as_conv_weight`."""
    cout, cin_g = weight.shape[:2]
    w = weight.reshape(groups, cout // groups, cin_g, *weight.shape[2:]).transpose(1, 2)
    return w.reshape(groups * cin_g, cout // groups, *weight.shape[2:]).contiguous()


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


class _PatchGeometry(tuple):
    """``(kernel, dilation, padding, stride, groups, block)`` of a patch extraction."""

    def __new__(cls, kernel, dilation, padding, stride, groups, block):
        return super().__new__(cls, (kernel, dilation, padding, stride, groups, block))

    def disjoint(self) -> bool:
        """Whether the sampled windows never overlap (then the backward is a plain scatter)."""
        kernel, dilation, _, stride, _, _ = self
        return all(s >= d * (k - 1) + 1 for k, d, s in zip(kernel, dilation, stride))


class _ConvPatchSamples(torch.autograd.Function):
    """im2col + regrouping (a strided window view when a conv group is one column group), with a
    scatter backward instead of ``col2im`` for disjoint windows."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: _PatchGeometry) -> Tensor:
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


def linear_samples(x: Tensor, block: int) -> Tensor:
    """Features ``(..., F)`` as ``(1, m*F/block, block)``: contiguous blocks share one distribution."""
    return x.reshape(1, -1, block)


def conv_weight_blocks(weight: Tensor, groups: int, f: int) -> Tensor:
    """View a conv weight ``(out, C/groups, kh, kw)`` as ``(groups, out/groups * G, f)`` rows ``W_q``.

    The same column grouping as :func:`conv_patch_samples`, so ``W_q`` pairs with patch group ``q``.
    """
    out = weight.shape[0]
    per_group = weight[0].numel()
    w = weight.reshape(groups, out // groups, f, per_group // f)
    return w.transpose(2, 3).reshape(groups, -1, f)


def conv_weight_unblocks(blocks: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`conv_weight_blocks`: back to the conv weight ``shape``, with standard strides.

    (A reshape alone can leave 1x1 weights with strides that also read as channels-last, which
    sends oneDNN's CPU convolution backward down a path that corrupts memory.)
    """
    groups, rows, f = blocks.shape
    out = shape[0]
    w = blocks.reshape(groups, out // groups, rows * groups // out, f).transpose(2, 3)
    return w.reshape(shape).clone(memory_format=torch.contiguous_format)


def whitening_stats(samples: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Mean ``(g, f)`` and covariance ``Sc^T Sc / m + eps*I`` ``(g, f, f)`` of ``samples`` ``(g, m, f)``."""
    if samples.shape[1] < 1:
        raise ValueError("cannot estimate whitening statistics from zero samples")
    return _WhiteningStats.apply(samples, eps)


class _WhiteningStats(torch.autograd.Function):
    """Mean and covariance with the symmetric backward ``dX = Sc (G + G^T) / m + g_mu / m``.

    (Autograd would run two large products, one per factor of ``Sc^T Sc``; the centring's own
    gradient vanishes because the centred samples sum to zero.)
    """

    @staticmethod
    def forward(ctx, samples: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        m = samples.shape[1]
        mean = samples.mean(dim=1)
        centred = samples - mean.unsqueeze(1)
        cov = _gram(centred).div_(m)
        cov.diagonal(dim1=1, dim2=2).add_(eps)
        ctx.save_for_backward(centred)
        return mean, cov

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor | None, grad_cov: Tensor | None) -> tuple[Tensor, None]:
        (centred,) = ctx.saved_tensors
        return _samples_grad(centred, grad_mean, grad_cov, centred.shape[1]), None


#: Column strip width of :func:`_gram` (wider matrices are multiplied by strips).
_GRAM_STRIP = 144


def _gram(x: Tensor) -> Tensor:
    """``x^T x`` of ``x`` ``(g, m, f)``, computing only its upper triangle of ``_GRAM_STRIP``-wide
    blocks and mirroring it: about ``(k + 1) / 2k`` of the product's work for ``k`` strips (CPU;
    on accelerators one product)."""
    f = x.shape[-1]
    k = max(1, round(f / _GRAM_STRIP))
    if k == 1 or x.device.type != "cpu":
        return torch.bmm(x.transpose(1, 2), x)
    out = x.new_empty(x.shape[0], f, f)
    edges = [f * i // k for i in range(k + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        strip = torch.bmm(x[:, :, lo:hi].transpose(1, 2), x[:, :, lo:])
        out[:, lo:hi, lo:] = strip
        out[:, hi:, lo:hi] = strip[:, :, hi - lo:].transpose(1, 2)
    return out


def _samples_grad(centred: Tensor, grad_mean: Tensor | None, grad_cov: Tensor | None, count: float) -> Tensor:
    """Gradient of the samples from those of the mean and covariance: ``Sc (G + G^T) / n + g_mu / n``,
    ``n`` the number of samples the statistics were taken over."""
    base = centred.new_zeros(()) if grad_mean is None else (grad_mean / count).unsqueeze(1)
    if grad_cov is None:
        return base.expand_as(centred).clone()
    sym = grad_cov + grad_cov.transpose(1, 2)
    return torch.baddbmm(base.expand_as(centred), centred, sym, alpha=1.0 / count)


def sync_whitening_stats(samples: Tensor, eps: float, group: object | None = None) -> tuple[Tensor, Tensor]:
    """:func:`whitening_stats` of the samples of every process in ``group``, concatenated.

    The deconvolution analogue of SyncBatchNorm: the sample count, sum and centred cross-products
    are all-reduced (two passes, so the covariance is centred on the global mean exactly), and in
    backward the gradients of the mean and covariance are all-reduced before being pushed to the
    local samples. Every process must call it with the same ``(g, f)``; ``m`` may differ.
    """
    if samples.shape[1] < 1:
        raise ValueError("cannot estimate whitening statistics from zero samples")
    return _SyncWhiteningStats.apply(samples, eps, group)


class _SyncWhiteningStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, samples: Tensor, eps: float, group: object | None) -> tuple[Tensor, Tensor]:
        import torch.distributed as dist

        g, m, f = samples.shape
        sums = torch.cat([samples.sum(dim=1).flatten(), samples.new_tensor([m])])
        dist.all_reduce(sums, group=group)
        total = sums[-1]
        mean = (sums[:-1] / total).view(g, f)
        centred = samples - mean.unsqueeze(1)
        cross = _gram(centred)
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
        return _samples_grad(centred, grad_mean, grad_cov, float(total)), None, None


def channel_moments(x: Tensor, channel_dim: int = 1, group: object | None = None,
                    sync: bool = False) -> tuple[Tensor, Tensor]:
    """Mean and (biased) variance of each channel of ``x`` over every other axis, as BatchNorm takes them.

    ``sync``: over the samples of every process in ``group`` (sums, then centred squares,
    all-reduced with autograd, so the gradient reaches every process's samples exactly).
    """
    dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
    if not sync:
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        return mean, var
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    count = x.new_tensor(float(x.numel() // x.shape[channel_dim]))
    dist.all_reduce(count, group=group)
    mean = all_reduce(x.sum(dims), group=group) / count
    shape = [-1 if d == channel_dim % x.dim() else 1 for d in range(x.dim())]
    var = all_reduce((x - mean.view(shape)).square().sum(dims), group=group) / count
    return mean, var


def isqrt_newton_schulz(cov: Tensor, n_iter: int) -> Tensor:
    """``cov^(-1/2)`` for a batch of SPD matrices by the coupled Newton-Schulz iteration.

    ``Y = cov/||cov||_F; Z = I; repeat: T = (3I - ZY)/2; Y = YT; Z = TZ``; result ``Z/sqrt(||cov||_F)``.
    Converges for any SPD input thanks to the Frobenius scaling. Differentiable: the gradient is
    the exact derivative of these ``n_iter`` steps (not of the true inverse square root).
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    norm = torch.linalg.matrix_norm(cov, keepdim=True)
    return _NewtonSchulz.apply(cov / norm, n_iter) / norm.sqrt()


def _newton_schulz_steps(y: Tensor, n_iter: int) -> Tensor:
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


def isqrt_newton_schulz_warm(cov: Tensor, init: Tensor, n_iter: int) -> Tensor:
    """A whitening matrix of ``cov`` close to ``init`` (a previous one), in ``n_iter`` Newton-Schulz steps.

    ``A = init cov init^T`` is near the identity when ``init`` nearly whitens ``cov``, so the
    coupled iteration on ``A`` (scaled so its mean eigenvalue is 1, and its largest, bounded by
    the largest row sum, stays below 2.5 where the scalar map converges) needs one or two steps
    where ``Cov / ||Cov||_F`` needs five or more. Returns ``A^(-1/2) init``, which whitens
    exactly (``D cov D^T = I``) once the iteration has converged; it is not symmetric: it is
    the symmetric whitening of ``cov`` rotated towards ``init``. The gradient flows to ``cov``
    through the steps; ``init`` is a constant.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    init = init.detach()
    a = init @ cov @ init.transpose(-1, -2)
    f = a.shape[-1]
    mean_eig = a.diagonal(dim1=-2, dim2=-1).sum(-1) / f
    row_bound = a.abs().sum(-1).amax(-1) / 2.5
    c = torch.maximum(mean_eig, row_bound).unsqueeze(-1).unsqueeze(-1)
    return (_newton_schulz_steps(a / c, n_iter) / c.sqrt()) @ init


def _newton_schulz_spectrum(evals: Tensor, n_iter: int) -> tuple[Tensor, Tensor]:
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


def _eigh_or_none(y: Tensor) -> tuple[Tensor, Tensor] | None:
    try:
        return torch.linalg.eigh(y)
    except torch.linalg.LinAlgError:
        return None


#: Smallest ``f`` for which one ``eigh`` beats the matrix iteration on CPU (2 threads, 5 steps),
#: with a gradient (the backward's replay is the iteration's cost again) and without.
_SPECTRAL_MIN_F = {True: 48, False: 384}


def _newton_schulz_scalar(evals: Tensor, n_iter: int) -> Tensor:
    """The iteration's scalar map ``p: y0 -> z_n`` at each of ``evals``."""
    y, z = evals, torch.ones_like(evals)
    for _ in range(n_iter):
        t = 1.5 - 0.5 * z * y
        y, z = y * t, t * z
    return z


class _NewtonSchulz(torch.autograd.Function):
    """Newton-Schulz steps on a normalised SPD batch, spectrally on CPU where that is faster.

    Every iterate is a polynomial in ``Y``, so for ``Y = U diag(l) U^T`` the result is
    ``U diag(p(l)) U^T`` and the adjoint of the step map is ``U (P o U^T G U) U^T`` with ``P`` the
    divided differences of ``p`` (Daleckii-Krein). On CPU one ``eigh`` serves both: the forward
    then costs ``eigh`` and one product instead of ``3 n_iter - 2`` matmuls, and the backward four
    matmuls. Small matrices (see ``_SPECTRAL_MIN_F``), accelerators (where ``eigh`` is slow) and
    a failed ``eigh`` take the matrix iteration (its backward replays it under autograd).
    """

    @staticmethod
    def forward(ctx, y: Tensor, n_iter: int) -> Tensor:
        ctx.n_iter = n_iter
        needs_grad = ctx.needs_input_grad[0]
        spectral = y.device.type == "cpu" and y.shape[-1] >= _SPECTRAL_MIN_F[needs_grad]
        decomposed = _eigh_or_none(y) if spectral else None
        if decomposed is None:
            ctx.save_for_backward(y)
            return _newton_schulz_steps(y, n_iter)
        evals, evecs = decomposed
        if needs_grad:
            p, dd = _newton_schulz_spectrum(evals, n_iter)
            ctx.save_for_backward(evecs, dd)
        else:
            p = _newton_schulz_scalar(evals, n_iter)
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
            (grad_y,) = torch.autograd.grad(_newton_schulz_steps(leaf, ctx.n_iter), leaf, grad)
        return grad_y, None


def fold_whitening(weight_blocks: Tensor, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
    """Implicit deconvolution: ``W'_q = W_q D`` and the shift ``W'_q mu`` per row.

    ``weight_blocks`` ``(g, rows, f)``, ``mean`` ``(g, f)``, ``deconv`` ``(g, f, f)``. Returns the
    folded blocks and ``(g, rows)`` shifts; the caller sums the shifts of one output and
    subtracts them from the bias, which equals applying the layer to ``D (x - mu)``.
    """
    folded = torch.bmm(weight_blocks, deconv)
    shift = torch.bmm(folded, mean.unsqueeze(-1)).squeeze(-1)
    return folded, shift


def _folded_bias(shift: Tensor, bias: Tensor | None, out: int) -> Tensor:
    """``b - sum_q W'_q mu``: the shifts of each output's blocks summed and subtracted."""
    folded = -shift.reshape(out, -1).sum(1)
    return folded if bias is None else folded + bias.to(shift.dtype)


def fold_conv(
    weight: Tensor, bias: Tensor | None, mean: Tensor, deconv: Tensor, groups: int
) -> tuple[Tensor, Tensor]:
    """Conv weight and bias with the whitening ``(mean, deconv)`` of its patches folded in."""
    blocks = conv_weight_blocks(weight.to(deconv.dtype), groups, deconv.shape[-1])
    folded, shift = fold_whitening(blocks, mean, deconv)
    return conv_weight_unblocks(folded, weight.shape), _folded_bias(shift, bias, weight.shape[0])


def fold_linear(weight: Tensor, bias: Tensor | None, mean: Tensor, deconv: Tensor) -> tuple[Tensor, Tensor]:
    """Linear weight and bias with the whitening of contiguous input blocks folded in."""
    blocks = weight.to(deconv.dtype).reshape(1, -1, deconv.shape[-1])
    folded, shift = fold_whitening(blocks, mean, deconv)
    return folded.reshape(weight.shape), _folded_bias(shift, bias, weight.shape[0])


def fast_deconv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mean: Tensor,
    deconv: Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """``conv2d`` of the whitened input, computed as one convolution with the folded weight."""
    w, b = fold_conv(weight, bias, mean, deconv, groups)
    return F.conv2d(x, w.to(x.dtype), b.to(x.dtype), stride, padding, dilation, groups)
