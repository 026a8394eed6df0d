"""The CIFAR-10 speed-record recipe as one plain PyTorch loop, written from its published
description without ndeconv's training pieces: a reference that tells the recipe from the loop.

    python bench/speedrun_plain.py --data ../shared/data/cifar10 [--epochs 9.9] [--seed 0]
                                   [--library-model] [--centred]

Everything here is its own: decoding the parquet files, the network (``--library-model`` swaps
in ``ndeconv``'s ``airbench94`` with its fitted stem instead, to test the model alone), the
augmentation (random translation by 2 with reflect padding, each image flipped once at random and
the whole set every other epoch), the summed label-smoothed loss with the published per-1,024
rates (no conversion to a mean loss), Nesterov SGD with the norm shifts in their own group, the
piecewise-linear schedule, the lookahead every 5 steps, and the test-time-augmented evaluation.
Prints the test accuracy with and without test-time augmentation and the training seconds; the
run is as long as the bundled recipe ``cifar10_speedrun``'s (``--epochs`` shortens it, the
schedule with it, as ``--set train.epochs=`` does there). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
BATCH, MOMENTUM, LR, WD, BIAS_SCALE = 1024, 0.85, 11.5, 0.0153, 64.0
STEP_SCALE = BATCH * (1 + 1 / (1 - MOMENTUM))


def load_split(path: Path) -> tuple[Tensor, Tensor]:
    """Normalised float images ``(n, 3, 32, 32)`` and labels of one parquet split."""
    table = pq.read_table(path).to_pydict()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(img["bytes"])).convert("RGB")) for img in table["img"]])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return (images - MEAN) / STD, torch.tensor(table["label"])


def stem_filters(images: Tensor, eps: float, centred: bool) -> Tensor:
    """24 filters of a 2x2 conv: eigenvectors of the 2x2 patches' covariance over ``images``, scaled by
    1/sqrt(eigenvalue + eps), both signs (the published covariance is uncentred)."""
    patches = images.double().unfold(2, 2, 1).unfold(3, 2, 1)  # n, c, h', w', 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    if centred:
        patches = patches - patches.mean(0)
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(12, 3, 2, 2)
    return torch.cat([filters, -filters]).float()


class Mul(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def conv(cin: int, cout: int) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    nn.init.dirac_(layer.weight.data[:cin])
    return layer


def norm(channels: int) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    layer.weight.requires_grad_(False)
    return layer


def plain_net(stem: Tensor) -> nn.Sequential:
    """The published network with ``stem`` as its first layer's (frozen) weight."""
    first = nn.Conv2d(3, 24, 2)
    first.weight.data.copy_(stem)
    first.weight.requires_grad_(False)
    first.bias.data.zero_()
    layers: list[nn.Module] = [first, nn.GELU()]
    for cin, cout in ((24, 64), (64, 256), (256, 256)):
        layers += [conv(cin, cout), nn.MaxPool2d(2), norm(cout), nn.GELU(), conv(cout, cout), norm(cout), nn.GELU()]
    return nn.Sequential(*layers, nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, 10, bias=False), Mul(1 / 9))


def library_net(fit_images: Tensor) -> tuple[nn.Module, nn.Parameter]:
    """ndeconv's ``airbench94`` with its stem fitted to ``fit_images``, and the stem's bias."""
    import timm

    import ndeconv  # noqa: F401  (registers the model)

    model = timm.create_model("airbench94")
    model.stem.fit(fit_images)
    return model, model.stem.bias


def translate(padded: Tensor, generator: torch.Generator) -> Tensor:
    """Each image's own random 32x32 window of its 36x36 reflect-padded version."""
    n = len(padded)
    dy, dx = (torch.randint(0, 5, (n,), generator=generator) for _ in range(2))
    out = torch.empty(n, 3, 32, 32)
    for y in range(5):
        for x in range(5):
            pick = (dy == y) & (dx == x)
            out[pick] = padded[pick, :, y:y + 32, x:x + 32]
    return out


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[float, float]:
    """Accuracy in % without and with the published test-time augmentation: half the mean of the
    image's and its mirror's logits, half the same averaged over two 1-pixel translations."""
    model.eval()
    plain = tta = 0
    for start in range(0, len(images), 1000):
        x, y = images[start:start + 1000], labels[start:start + 1000]

        def mirrored(v: Tensor) -> Tensor:
            return 0.5 * (model(v) + model(v.flip(-1)))

        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * (mirrored(padded[:, :, 0:32, 0:32]) + mirrored(padded[:, :, 2:34, 2:34]))
        plain += (model(x).argmax(1) == y).sum().item()
        tta += ((0.5 * mirrored(x) + 0.5 * shifted).argmax(1) == y).sum().item()
    return 100 * plain / len(images), 100 * tta / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=9.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--library-model", action="store_true", help="ndeconv's airbench94 instead of this file's")
    parser.add_argument("--centred", action="store_true", help="centre the stem's patch covariance")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = load_split(args.data / "train.parquet")
    test_x, test_y = load_split(args.data / "test.parquet")
    fit = train_x[torch.randperm(len(train_x), generator=generator)[:5000]]
    if args.library_model:
        model, stem_bias = library_net(fit)
    else:
        model = plain_net(stem_filters(fit, 5e-4, args.centred))
        stem_bias = model[0].bias

    steps_per_epoch = len(train_x) // BATCH
    total = math.ceil(args.epochs * steps_per_epoch)
    factors = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])
    alphas = 0.95 ** 5 * (np.arange(total + 1) / total) ** 3
    lr = LR / STEP_SCALE
    wd = WD * BATCH / STEP_SCALE
    shifts = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in [m.bias]]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not s for s in shifts)]
    optimizer = torch.optim.SGD([dict(params=shifts, lr=lr * BIAS_SCALE, weight_decay=wd / (lr * BIAS_SCALE)),
                                 dict(params=others, lr=lr, weight_decay=wd / lr)],
                                momentum=MOMENTUM, nesterov=True)
    base = [group["lr"] for group in optimizer.param_groups]
    average = {k: v.clone() for k, v in model.state_dict().items()}

    def pull(decay: float) -> None:
        for avg, value in zip(average.values(), model.state_dict().values()):
            if value.is_floating_point():
                avg.lerp_(value, 1 - decay)
                value.copy_(avg)

    flips = torch.rand(len(train_x), generator=generator) < 0.5
    padded = F.pad(torch.where(flips[:, None, None, None], train_x.flip(-1), train_x), (2, 2, 2, 2), mode="reflect")
    step, seconds = 0, 0.0
    for epoch in range(math.ceil(args.epochs)):
        started = time.perf_counter()
        stem_bias.requires_grad_(epoch < 3)
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * BATCH:(b + 1) * BATCH]
            x = translate(padded[idx], generator)
            if epoch % 2 == 1:
                x = x.flip(-1)
            for group, rate in zip(optimizer.param_groups, base):
                group["lr"] = rate * factors[step]
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=0.2, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 5 == 0:
                pull(float(alphas[step]))
            if step >= total:
                pull(1.0)
                break
        seconds += time.perf_counter() - started
        print(f"epoch {epoch + 1}: step {step}, loss {loss.item() / BATCH:.4f}, {seconds:.1f} s", flush=True)
    plain, tta = evaluate(model, test_x, test_y)
    print(f"plain loop ({'library model' if args.library_model else 'own model'}, seed {args.seed}, "
          f"{args.epochs} epochs, {total} steps): {tta:.2f}% with TTA, {plain:.2f}% without, "
          f"{seconds:.1f} s of training")


if __name__ == "__main__":
    main()
