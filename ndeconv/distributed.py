"""Multi-process deconvolution: synchronised whitening statistics (the analogue of SyncBatchNorm)."""

from __future__ import annotations

from torch import nn

from .layers._whitening import WhiteningLayer

__all__ = ["sync_deconv_stats"]


def sync_deconv_stats(model: nn.Module, enabled: bool = True, process_group: object | None = None) -> int:
    """Make every FastDeconv / Delinear / ChannelDeconv in ``model`` whiten with global-batch statistics.

    With ``torch.distributed`` initialised and more than one process, each layer all-reduces its
    sample sums and centred cross-products (and their gradients in backward) over
    ``process_group`` (default: all processes), so every rank computes the same whitening matrix
    and its running estimates stay identical across ranks. In a single process it changes
    nothing. Returns the number of layers set.
    """
    layers = [m for m in model.modules() if isinstance(m, WhiteningLayer)]
    for layer in layers:
        layer.sync_stats, layer.process_group = enabled, process_group
    return len(layers)
