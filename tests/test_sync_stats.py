"""Synchronised deconvolution statistics: 2 gloo processes whiten exactly like one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ndeconv


def _layers(update_every=1, scale="none", stats_grad=True):
    torch.manual_seed(0)
    k = dict(n_iter=4, update_every=update_every, stats_grad=stats_grad)
    conv = ndeconv.FastDeconv(6, 8, 3, padding=1, block=3, sampling_stride=1, scale=scale, **k).double()
    linear = ndeconv.Delinear(10, 4, block=5, scale=scale, **k).double()
    channel = ndeconv.ChannelDeconv(7, block=4, **k).double()  # 3 leftover channels
    return conv, linear, channel


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, 5, 5, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, 6).view(1, 6, 1, 1)
    z = torch.randn(8, 10, generator=g, dtype=torch.float64) + 0.3
    c = torch.randn(8, 7, 3, 3, generator=g, dtype=torch.float64)
    return x, z, c


def _step(layers, x, z, c, shard=slice(None)):
    """One forward/backward of the batch's ``shard``; returns outputs, input and weight gradients and the
    running estimates. The loss weights each output element by its position in the whole batch."""
    x, z, c = (t[shard].clone().requires_grad_(True) for t in (x, z, c))
    outs = [layer(t) for layer, t in zip(layers, (x, z, c))]
    weights = [torch.linspace(-1, 1, 8 * o[0].numel(), dtype=o.dtype).view(8, *o.shape[1:])[shard] for o in outs]
    sum(((o * w) ** 2).sum() for o, w in zip(outs, weights)).backward()
    state = {f"{i}.{k}": v.clone() for i, layer in enumerate(layers) for k, v in layer.state_dict().items()}
    return [o.detach() for o in outs], [x.grad, z.grad, c.grad], state, [l.weight.grad.clone() for l in layers[:2]]


STEPS = 3  # with update_every = 2: update, reuse, update


def _worker(rank, world, init_file, out_dir, update_every, scale, stats_grad):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    layers = _layers(update_every, scale, stats_grad)
    for layer in layers:
        ndeconv.sync_deconv_stats(layer)
    shard = slice(rank * 4, rank * 4 + 4)
    steps = []
    for _ in range(STEPS):
        outs, grads, state, wgrads = _step(layers, *_inputs(), shard=shard)
        steps.append({"outs": outs, "grads": grads, "state": state, "wgrads": wgrads})
    torch.save(steps, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("update_every, scale, stats_grad",
                         [(1, "none", True), (2, "none", True), (2, "channel", True), (2, "channel", False)])
def test_two_processes_whiten_with_the_statistics_of_the_concatenated_batch(tmp_path, update_every, scale,
                                                                            stats_grad):
    """With ``scale="channel"`` the fresh channel moments of every step are the global batch's too, and
    with ``stats_grad=False`` they keep their gradient as in one process (only the mean and ``D`` lose it)."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), update_every, scale, stats_grad), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    layers = _layers(update_every, scale, stats_grad)
    for step in range(STEPS):  # all ranks update (and reuse) on the same steps
        outs, grads, state, wgrads = _step(layers, *_inputs())  # one process, the whole batch
        r0, r1 = ranks[0][step], ranks[1][step]
        for i in range(3):
            torch.testing.assert_close(torch.cat([r0["outs"][i], r1["outs"][i]]), outs[i])
            # the loss is a sum over samples, so each rank's input gradient is its shard of the full one
            torch.testing.assert_close(torch.cat([r0["grads"][i], r1["grads"][i]]), grads[i])
        for key, value in state.items():
            torch.testing.assert_close(r0["state"][key], value, msg=key)
            torch.testing.assert_close(r1["state"][key], value, msg=key)
        for i in range(2):  # weight gradients summed over ranks (what DDP's all-reduce does before averaging)
            torch.testing.assert_close(r0["wgrads"][i] + r1["wgrads"][i], wgrads[i])


def test_without_a_process_group_sync_changes_nothing():
    layers = _layers()
    reference = _step(_layers(), *_inputs())
    assert sum(ndeconv.sync_deconv_stats(layer) for layer in layers) == 3
    synced = _step(layers, *_inputs())
    for a, b in zip(reference[0] + reference[1], synced[0] + synced[1]):
        torch.testing.assert_close(a, b)
