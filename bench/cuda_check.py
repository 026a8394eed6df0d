"""One prepared run for a CUDA machine (under five minutes): correctness, precision and speed of
deconvolution on the GPU.

    python bench/cuda_check.py [--device cuda] [--repeat 5]

1. The layers against the float64 reference of the tests (``tests/reference.py``, written from the
   definitions): ``FastDeconv`` (plain, strided + grouped, and a k = 2 whitening reuse step),
   ``Delinear``, ``ChannelDeconv``, training-mode forward on the device in float32.
2. One training step of ``vgg11_cifar`` with deconvolution in fp32, bf16 and fp16 autocast (fp16
   with loss scaling): loss and gradients finite, running statistics still float32.
3. ``torch.compile`` of a deconvolved model: a compiled training step matches the eager one.
4. Newton-Schulz: the matrix iteration against one ``eigh`` (the spectral path the CPU takes
   from ``f = 48`` with a gradient), at the paper's sizes: the timing behind the per-device choice.
5. ND/BN train-step ratios, batch 128 and 512, ``vgg11_cifar`` and ``resnet18_cifar``, with
   ``update_every`` 1 (the paper) and 16.

Without CUDA it says so and exits 0; ``--device cpu`` runs the same checks on the CPU (slowly, at
batch 32) to try the script itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

import ndeconv  # noqa: E402
from ndeconv import _autograd as AG  # noqa: E402
from network import build, paired_median_seconds, train_step  # noqa: E402


def _report(name: str, ok: bool, detail: str) -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return ok


def check_layers(dev: torch.device) -> bool:
    """Training-mode outputs of the layers on ``dev`` against the float64 reference."""
    import reference

    print("1. layers vs the float64 reference (max abs error, float32 on the device)")
    ok = True
    torch.manual_seed(0)
    cases = [("FastDeconv 8->6 k3 pad1", dict(in_channels=8, out_channels=6, kernel_size=3, padding=1, block=4,
                                                sampling_stride=1)),
             ("FastDeconv 8->4 k3 stride2 groups2", dict(in_channels=8, out_channels=4, kernel_size=3, stride=2,
                                                          padding=1, groups=2, sampling_stride=2))]
    for name, kwargs in cases:
        layer = ndeconv.FastDeconv(**kwargs).to(dev).train()
        x = torch.randn(3, kwargs["in_channels"], 7, 7)
        with torch.no_grad():
            out = layer(x.to(dev)).double().cpu().numpy()
        ref, _ = reference.fast_deconv(x.numpy(), layer.weight.detach().cpu().numpy(),
                                       layer.bias.detach().cpu().numpy(), stride=layer.stride,
                                       padding=layer.padding, groups=layer.groups, block=layer.block,
                                       sampling_stride=layer.sampling_stride)
        err = float(np.abs(out - ref).max())
        ok &= _report(name, err < 1e-3, f"{err:.2e}")
    layer = ndeconv.FastDeconv(8, 6, 3, padding=1, block=4, sampling_stride=1, update_every=2).to(dev).train()
    with torch.no_grad():
        layer(torch.randn(3, 8, 7, 7, device=dev))  # the update step; the next one reuses the running estimate
        running = [(layer.running_mean[0].double().cpu().numpy(), layer.running_deconv[0].double().cpu().numpy())]
        x = torch.randn(3, 8, 7, 7)
        out = layer(x.to(dev)).double().cpu().numpy()
    ref, _ = reference.fast_deconv(x.numpy(), layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy(),
                                   padding=layer.padding, block=4, sampling_stride=1, stats=running)
    err = float(np.abs(out - ref).max())
    ok &= _report("FastDeconv update_every=2, reuse step", err < 1e-3, f"{err:.2e}")
    lin = ndeconv.Delinear(16, 5, block=8).to(dev).train()
    x = torch.randn(32, 16)
    with torch.no_grad():
        out = lin(x.to(dev)).double().cpu().numpy()
    ref = reference.delinear(x.numpy(), lin.weight.detach().cpu().numpy(), lin.bias.detach().cpu().numpy(), block=8)
    err = float(np.abs(out - ref).max())
    ok &= _report("Delinear 16->5 block 8", err < 1e-3, f"{err:.2e}")
    chan = ndeconv.ChannelDeconv(6, block=4, sampling_stride=2).to(dev).train()
    x = torch.randn(4, 6, 5, 5)
    with torch.no_grad():
        out = chan(x.to(dev)).double().cpu().numpy()
    err = float(np.abs(out - reference.channel_deconv(x.numpy(), block=4, sampling_stride=2)).max())
    ok &= _report("ChannelDeconv 6 block 4", err < 1e-3, f"{err:.2e}")
    return ok


def check_precisions(dev: torch.device, batch: int) -> bool:
    """A vgg11_cifar ND training step per precision: finite loss and gradients, float32 statistics."""
    print(f"2. a training step of vgg11_cifar (ND) per precision, batch {batch}")
    ok = True
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        torch.manual_seed(0)
        model = build("vgg11_cifar", "deconv", {}, dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        scaler.step(opt)
        scaler.update()
        stats = {m.running_deconv.dtype for m in model.modules() if hasattr(m, "running_deconv")}
        good = bool(torch.isfinite(loss)) and grads_finite and stats == {torch.float32}
        ok &= _report(name, good, f"loss {float(loss.detach()):.4f}, gradients finite {grads_finite}, statistics {stats}")
    return ok


def check_compile(dev: torch.device, batch: int) -> bool:
    """A compiled training step gives the eager step's loss and weights."""
    print("3. torch.compile (resnet18_cifar ND, one training step)")
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build("resnet18_cifar", "deconv", {}, dev).train()
        fn = torch.compile(model) if compiled else model
        loss = F.cross_entropy(fn(x), y)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((float(loss), grad))
    (l0, g0), (l1, g1) = results
    rel = float((g0 - g1).norm() / g0.norm())
    return _report("compiled vs eager", abs(l0 - l1) < 1e-3 and rel < 1e-2,
                   f"loss {l0:.5f} vs {l1:.5f}, gradient relative difference {rel:.1e}")


def _seconds(fn, repeat: int, sync) -> float:
    return paired_median_seconds([lambda: (fn(), sync())], repeat)[0]


def time_newton_schulz(dev: torch.device, repeat: int, sync) -> None:
    """Matrix iteration vs one ``eigh`` (forward + backward), the choice ``isqrt_newton_schulz`` makes per device."""
    print("4. Newton-Schulz, 5 steps, forward+backward (ms): matrix iteration vs eigh")
    for groups, f in ((1, 64), (8, 64), (1, 576), (8, 576), (1, 512)):
        a = torch.randn(groups, f, 2 * f, device=dev)
        cov = a @ a.transpose(-1, -2) / (2 * f) + 1e-3 * torch.eye(f, device=dev)
        y = (cov / torch.linalg.matrix_norm(cov, keepdim=True)).requires_grad_()
        grad = torch.randn_like(y)

        def iteration() -> None:
            AG.newton_schulz_steps(y, 5).backward(grad)

        def spectral() -> None:
            evals, evecs = torch.linalg.eigh(y)
            ((evecs * AG.newton_schulz_scalar(evals, 5).unsqueeze(-2)) @ evecs.transpose(-1, -2)).backward(grad)

        t_it, t_eigh = (_seconds(fn, repeat, sync) for fn in (iteration, spectral))
        faster = "iteration" if t_it <= t_eigh else "eigh"
        print(f"  {groups} x {f:>3d}: iteration {t_it * 1e3:7.2f}   eigh {t_eigh * 1e3:7.2f}   faster: {faster}")
    chosen = "eigh from f >= 48 (with a gradient)" if dev.type == "cpu" else "the matrix iteration"
    print(f"  ndeconv uses on {dev.type}: {chosen}")


def step_ratios(dev: torch.device, batches: list[int], repeat: int, sync) -> None:
    print("5. train step, ND / BN (median ms, interleaved)")
    print(f"  {'model':<16s} {'batch':>5s} {'BN':>8s} {'ND k=1':>8s} {'ratio':>6s} {'ND k=16':>8s} {'ratio':>6s}")
    for name in ("vgg11_cifar", "resnet18_cifar"):
        for batch in batches:
            torch.manual_seed(0)
            x = torch.randn(batch, 3, 32, 32, device=dev)
            y = torch.randint(0, 10, (batch,), device=dev)
            models = [build(name, "bn", {}, dev), build(name, "deconv", {}, dev),
                      build(name, "deconv", {"model.deconv.update_every": "16"}, dev)]
            cycle = [1, 1, 16]  # a k = 16 model is timed over whole 16-step cycles

            def steps(model, k: int):
                step = train_step(model, x, y, sync)
                return lambda: [step() for _ in range(k)]

            times = paired_median_seconds([steps(m, k) for m, k in zip(models, cycle)], repeat, warmup=1)
            bn, nd, nd16 = (t / k for t, k in zip(times, cycle))
            print(f"  {name:<16s} {batch:>5d} {bn * 1e3:8.1f} {nd * 1e3:8.1f} {nd / bn:6.2f} {nd16 * 1e3:8.1f} "
                  f"{nd16 / bn:6.2f}")
            del models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench/cuda_check.py needs a CUDA GPU (none here); `--device cpu` runs the same checks on the CPU.")
        return
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, ndeconv {ndeconv.__version__}")
    start = time.perf_counter()
    small = 32 if dev.type == "cpu" else 128
    ok = check_layers(dev)
    ok &= check_precisions(dev, small)
    ok &= check_compile(dev, small // 4)
    time_newton_schulz(dev, args.repeat, sync)
    step_ratios(dev, [small] if dev.type == "cpu" else [128, 512], args.repeat if dev.type == "cuda" else 1, sync)
    print(f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {time.perf_counter() - start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
