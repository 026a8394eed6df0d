"""An independent float64 NumPy implementation of method.md, written from the text, for tests.

Deliberately naive: explicit loops over output positions, explicit column lists per group,
the plain (unskipped) coupled Newton-Schulz iteration, and *explicit* deconvolution (whiten
every patch, then apply the original weights) rather than folding into the weights.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def effective_block(block: int, channels: int, groups: int) -> int:
    per_group = channels // groups
    if groups > 1:
        return per_group
    if block > channels:
        return channels
    return block if channels % block == 0 else math.gcd(block, channels)


def coupled_iteration(matrix: np.ndarray, scale: float, n_iter: int) -> np.ndarray:
    """The plain coupled Newton-Schulz iteration on ``matrix / scale``: ``Z / sqrt(scale)``."""
    y = matrix / scale
    z = np.eye(len(matrix))
    for _ in range(n_iter):
        t = (3 * np.eye(len(matrix)) - z @ y) / 2
        y = y @ t
        z = t @ z
    return z / np.sqrt(scale)


def newton_schulz(cov: np.ndarray, n_iter: int) -> np.ndarray:
    return coupled_iteration(cov, np.sqrt((cov**2).sum()), n_iter)


def standardize_per_channel(x, eps=1e-5):
    """Each channel minus its mean, over its standard deviation, over the batch and every position
    (``scale="channel"``: BatchNorm's training statistics, variance biased)."""
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)


def covariance(samples: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    mu = samples.mean(0)
    centred = samples - mu
    return mu, centred.T @ centred / len(samples) + eps * np.eye(samples.shape[1])


def diagonal_shrinkage(samples: np.ndarray) -> float:
    """Schafer-Strimmer's intensity towards the diagonal, entry by entry from its definition:
    sum over i != j of the estimated variance of s_ij over the sum of s_ij^2 (s unbiased)."""
    m, f = samples.shape
    if m < 2:
        return 1.0
    x = samples - samples.mean(0)
    products = [np.outer(row, row) for row in x]  # w_k
    mean = sum(products) / m
    spread = sum((w - mean) ** 2 for w in products)
    off = ~np.eye(f, dtype=bool)
    variance = (m / (m - 1) ** 3 * spread)[off].sum()
    energy = ((m / (m - 1) * mean)[off] ** 2).sum()
    return float(np.clip(variance / energy, 0.0, 1.0)) if energy > 0 else 1.0


def small_batch_covariance(sampled, f: int, eps: float, small_batch: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``sampled(stride)``'s samples: at the layer's stride; with ``small_batch``
    at every position (stride 1) when those are fewer than ``f``, and then, still fewer, with the
    off-diagonal entries shrunk by the intensity."""
    samples = np.array(sampled(None))
    if small_batch and len(samples) < f:
        samples = np.array(sampled(1))
    mu, cov = covariance(samples, eps)
    if small_batch and len(samples) < f:
        lam = diagonal_shrinkage(samples)
        cov = np.where(np.eye(f, dtype=bool), cov, (1 - lam) * cov)
    return mu, cov


def coarsest_stride(sampled, f: int, sampling_stride: int, samples_per_dim, largest: int) -> int:
    """By trying every stride up to ``largest``: the largest one, at least ``sampling_stride``, whose
    ``sampled(stride)`` gives ``samples_per_dim * f`` samples (``sampling_stride`` if none does, or
    without ``samples_per_dim``)."""
    if samples_per_dim is None:
        return sampling_stride
    enough = [s for s in range(sampling_stride, largest + 1) if len(sampled(s)) >= samples_per_dim * f]
    return max(enough, default=sampling_stride)


def conv_patch(xp, n, i, j, channels, kh, kw, stride, dilation):
    """Patch seen at output (i, j): channel-major, then ky, then kx."""
    rows = i * stride[0] + dilation[0] * np.arange(kh)
    cols = j * stride[1] + dilation[1] * np.arange(kw)
    return xp[n][np.ix_(channels, rows, cols)].reshape(-1)


def fast_deconv(x, weight, bias, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                block=64, sampling_stride=3, eps=1e-5, n_iter=5, stats=None,
                small_batch=True, samples_per_dim=None):
    """Training-mode FastDeconv output, and (mu, D) per conv group: those of the batch, or the given
    ``stats`` (a layer whitening with its running estimate).

    ``small_batch``: see :func:`small_batch_covariance`;
    ``samples_per_dim``: the sampling stride of :func:`coarsest_stride`."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n_batch, channels, height, width = x.shape
    out, per_group, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    ho = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    blk = effective_block(block, channels, groups)
    n_blocks = per_group // blk
    out_per_group = out // groups
    y = np.zeros((n_batch, out, ho, wo))
    used = []
    for g in range(groups):
        chans = np.arange(g * per_group, (g + 1) * per_group)
        column_groups = [np.arange(q, per_group * kh * kw, n_blocks) for q in range(n_blocks)]
        f = len(column_groups[0])
        if stats is None:
            def at_stride(step, chans=chans, column_groups=column_groups):
                return [
                    conv_patch(xp, n, i, j, chans, kh, kw, stride, dilation)[cols]
                    for n in range(n_batch)
                    for i in range(0, ho, step)
                    for j in range(0, wo, step)
                    for cols in column_groups
                ]
            base = coarsest_stride(at_stride, f, sampling_stride, samples_per_dim, max(ho, wo))
            mu, cov = small_batch_covariance(lambda step: at_stride(step or base), f, eps, small_batch)
            deconv = newton_schulz(cov, n_iter)
        else:
            mu, deconv = (np.asarray(a, dtype=np.float64) for a in stats[g])
        used.append((mu, deconv))
        for o in range(g * out_per_group, (g + 1) * out_per_group):
            w = weight[o].reshape(-1)
            for n in range(n_batch):
                for i in range(ho):
                    for j in range(wo):
                        p = conv_patch(xp, n, i, j, chans, kh, kw, stride, dilation)
                        y[n, o, i, j] = sum(w[cols] @ (deconv @ (p[cols] - mu)) for cols in column_groups)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y, used


def fast_deconv3d(x, weight, bias, *, stride=(1, 1, 1), padding=(0, 0, 0), dilation=(1, 1, 1), groups=1,
                  block=64, sampling_stride=3, eps=1e-5, n_iter=5, small_batch=True):
    """Training-mode FastDeconv3d output and (mu, D) per conv group: every output voxel's patch
    (channel-major, then depth, height, width), column groups of the block, explicit whitening."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n_batch, channels = x.shape[:2]
    out, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding))
    sizes = [(x.shape[2 + a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(3)]
    positions = list(itertools.product(*(range(s) for s in sizes)))
    blk = effective_block(block, channels, groups)
    n_blocks = per_group // blk
    f_all = per_group * int(np.prod(kernel))

    def patch(n, pos, chans):
        index = [np.asarray(chans)] + [pos[a] * stride[a] + dilation[a] * np.arange(kernel[a]) for a in range(3)]
        return xp[n][np.ix_(*index)].reshape(-1)

    y = np.zeros((n_batch, out, *sizes))
    stats = []
    for g in range(groups):
        chans = np.arange(g * per_group, (g + 1) * per_group)
        column_groups = [np.arange(q, f_all, n_blocks) for q in range(n_blocks)]
        def sampled(step, chans=chans, column_groups=column_groups):
            kept = [pos for pos in positions if all(p % (step or sampling_stride) == 0 for p in pos)]
            return [patch(n, pos, chans)[cols] for n in range(n_batch) for pos in kept for cols in column_groups]
        mu, cov = small_batch_covariance(sampled, len(column_groups[0]), eps, small_batch)
        deconv = newton_schulz(cov, n_iter)
        stats.append((mu, deconv))
        for o in range(g * (out // groups), (g + 1) * (out // groups)):
            w = weight[o].reshape(-1)
            for n in range(n_batch):
                for pos in positions:
                    p = patch(n, pos, chans)
                    y[(n, o) + pos] = sum(w[cols] @ (deconv @ (p[cols] - mu)) for cols in column_groups)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1, 1)
    return y, stats


def fast_deconv_transpose2d(x, weight, bias, *, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                            dilation=(1, 1), groups=1, block=64, sampling_stride=3, eps=1e-5, n_iter=5,
                            small_batch=True, samples_per_dim=None):
    """Training-mode FastDeconvTranspose2d from the definition of a transposed convolution: output
    pixel (u, v) sums weight[c, o, a, b] * x[c, i, j] over i*s - p + a*d = u, j*s - p + b*d = v.
    Its patch P[c, a, b] is that x value (0 where no such input pixel exists), in weight order."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n_batch, channels, height, width = x.shape
    _, out_per_group, kh, kw = weight.shape
    per_group = channels // groups
    ho = (height - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    wo = (width - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1

    def patch(n, u, v, chans):
        p = np.zeros((len(chans), kh, kw))
        for a in range(kh):
            for b in range(kw):
                i, ri = divmod(u + padding[0] - a * dilation[0], stride[0])
                j, rj = divmod(v + padding[1] - b * dilation[1], stride[1])
                if ri == 0 and rj == 0 and 0 <= i < height and 0 <= j < width:
                    p[:, a, b] = x[n, chans, i, j]
        return p.reshape(-1)

    blk = effective_block(block, channels, groups)
    n_blocks = per_group // blk
    y = np.zeros((n_batch, out_per_group * groups, ho, wo))
    stats = []
    for g in range(groups):
        chans = np.arange(g * per_group, (g + 1) * per_group)
        column_groups = [np.arange(q, per_group * kh * kw, n_blocks) for q in range(n_blocks)]
        def at_stride(step, chans=chans, column_groups=column_groups):
            return [patch(n, u, v, chans)[cols] for n in range(n_batch) for u in range(0, ho, step)
                    for v in range(0, wo, step) for cols in column_groups]
        f = len(column_groups[0])
        base = coarsest_stride(at_stride, f, sampling_stride, samples_per_dim, max(ho, wo))
        mu, cov = small_batch_covariance(lambda step: at_stride(step or base), f, eps, small_batch)
        deconv = newton_schulz(cov, n_iter)
        stats.append((mu, deconv))
        for o_local in range(out_per_group):
            w = weight[chans, o_local].reshape(-1)
            for n in range(n_batch):
                for u in range(ho):
                    for v in range(wo):
                        p = patch(n, u, v, chans)
                        y[n, g * out_per_group + o_local, u, v] = sum(
                            w[cols] @ (deconv @ (p[cols] - mu)) for cols in column_groups)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y, stats


def delinear(x, weight, bias, *, block=512, eps=1e-5, n_iter=5):
    """Training-mode Delinear: contiguous feature blocks sharing one covariance."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    blk = effective_block(block, x.shape[1], 1)
    blocks = [slice(k, k + blk) for k in range(0, x.shape[1], blk)]
    mu, cov = covariance(np.concatenate([x[:, b] for b in blocks]), eps)
    deconv = newton_schulz(cov, n_iter)
    whitened = np.concatenate([(x[:, b] - mu) @ deconv.T for b in blocks], axis=1)
    y = whitened @ weight.T
    return y if bias is None else y + np.asarray(bias, dtype=np.float64)


def channel_deconv(x, *, block, eps=1e-5, n_iter=5, sampling_stride=3):
    """Training-mode ChannelDeconv on (N, C) or (N, C, H, W)."""
    x = np.asarray(x, dtype=np.float64)
    channels = x.shape[1]
    last = np.moveaxis(x, 1, -1)
    sampled = x[:, :, ::sampling_stride, ::sampling_stride] if x.ndim == 4 else x
    samples = np.moveaxis(sampled, 1, -1).reshape(-1, channels)
    blk = min(block, channels)
    out = np.empty_like(last)
    full = channels // blk * blk
    for start in range(0, full, blk):
        mu, cov = covariance(samples[:, start:start + blk], eps)
        out[..., start:start + blk] = (last[..., start:start + blk] - mu) @ newton_schulz(cov, n_iter).T
    if full < channels:
        rest = samples[:, full:]
        out[..., full:] = (last[..., full:] - rest.mean(0)) / np.sqrt(rest.var(0) + eps)
    return np.moveaxis(out, -1, 1)
