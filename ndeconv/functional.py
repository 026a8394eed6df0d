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
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._autograd import ConvPatchSamples, NewtonSchulz, PatchGeometry, SyncWhiteningStats, WhiteningStats

__all__ = [
    "resolve_block",
    "same_padding",
    "conv_output_size",
    "conv_transpose_output_size",
    "coarsest_sampling_stride",
    "conv_patch_samples",
    "conv_transpose_patch_samples",
    "linear_samples",
    "transposed_as_conv_weight",
    "conv_as_transposed_weight",
    "conv_weight_blocks",
    "conv_weight_unblocks",
    "whitening_stats",
    "sync_whitening_stats",
    "diagonal_shrinkage",
    "shrink_to_diagonal",
    "channel_moments",
    "isqrt_newton_schulz",
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


def conv_output_size(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Output positions along each axis of a convolution of an input of spatial ``size``."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation))


def conv_transpose_output_size(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                               padding: Sequence[int], output_padding: Sequence[int],
                               dilation: Sequence[int]) -> tuple[int, ...]:
    """Output positions along each axis of a transposed convolution of an input of spatial ``size``."""
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + q + 1
                 for n, k, s, p, q, d in zip(size, kernel_size, stride, padding, output_padding, dilation))


def coarsest_sampling_stride(positions: Sequence[int], samples_per_position: int, f: int, samples_per_dim: int,
                             sampling_stride: int) -> int:
    """The coarsest sampling stride, at least ``sampling_stride``, whose sampled positions (every
    s-th of ``positions`` along each axis, ``samples_per_position`` samples each) still give
    ``samples_per_dim * f`` samples of an ``f``-dimensional covariance: large feature maps, whose
    patches give far more samples than a stable estimate needs, are sampled more sparsely.
    ``sampling_stride`` itself if even that gives fewer."""
    def samples(s: int) -> int:
        return samples_per_position * math.prod(-(-n // s) for n in positions)

    stride, wanted = sampling_stride, samples_per_dim * f
    while stride < max(positions) and samples(stride + 1) >= wanted:
        stride += 1
    return stride


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
    geometry = PatchGeometry(
        _pair(kernel_size), _pair(dilation), _pair(padding),
        tuple(s * sampling_stride for s in _pair(stride)), groups, block,
    )
    return ConvPatchSamples.apply(x, geometry)


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
    return WhiteningStats.apply(samples, eps)


def sync_whitening_stats(samples: Tensor, eps: float, group: object | None = None) -> tuple[Tensor, Tensor]:
    """:func:`whitening_stats` of the samples of every process in ``group``, concatenated.

    The deconvolution analogue of SyncBatchNorm: the sample count, sum and centred cross-products
    are all-reduced (two passes, so the covariance is centred on the global mean exactly), and in
    backward the gradients of the mean and covariance are all-reduced before being pushed to the
    local samples. Every process must call it with the same ``(g, f)``; ``m`` may differ.
    """
    if samples.shape[1] < 1:
        raise ValueError("cannot estimate whitening statistics from zero samples")
    return SyncWhiteningStats.apply(samples, eps, group)


def diagonal_shrinkage(samples: Tensor) -> Tensor:
    """How far to shrink the covariance of ``samples`` ``(g, m, f)`` towards its diagonal, per group.

    The estimate of Schafer and Strimmer (2005, target "D": unequal variances, no correlation),
    the Ledoit-Wolf intensity for that target: with the unbiased covariance ``s_ij`` and the
    estimated variance of each entry, ``Var(s_ij) = m / (m-1)^3 sum_k (w_kij - mean_k w_kij)^2``
    where ``w_kij = x_ki x_kj`` of the centred samples,
    ``lambda = sum_{i != j} Var(s_ij) / sum_{i != j} s_ij^2``, clipped to ``[0, 1]``. It is near 0
    when the samples pin the correlations down and near 1 when they are noise (fewer samples
    than dimensions), and 1 for a single sample. Differentiable (the gradient of the shrunk
    covariance is that of the function computed, as everywhere in the layers); costs two
    ``f x m`` by ``m x f`` products, no more than the covariance itself.
    """
    g, m, f = samples.shape
    if m < 2:
        return samples.new_ones(g)
    centred = samples - samples.mean(1, keepdim=True)
    mean_products = centred.transpose(1, 2) @ centred / m  # mean over k of w_kij
    squares = centred.square()
    spread = squares.transpose(1, 2) @ squares - m * mean_products.square()  # sum_k (w_kij - mean w_ij)^2
    off = 1.0 - torch.eye(f, device=samples.device, dtype=samples.dtype)
    variance = (spread * off).sum((1, 2)) * m / (m - 1) ** 3
    energy = ((mean_products * (m / (m - 1))).square() * off).sum((1, 2))
    return torch.where(energy > 0, variance / energy.clamp_min(torch.finfo(samples.dtype).tiny), 1.0).clamp(0.0, 1.0)


def shrink_to_diagonal(cov: Tensor, intensity: Tensor) -> Tensor:
    """``(1 - lambda) cov + lambda diag(cov)`` for covariances ``(g, f, f)`` and intensities ``(g,)``:
    the off-diagonal entries scaled by ``1 - lambda``, the variances kept."""
    diagonal = torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))
    return cov - intensity.to(cov.dtype).view(-1, 1, 1) * (cov - diagonal)


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
    return NewtonSchulz.apply(cov / norm, n_iter) / norm.sqrt()


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
