"""The pictures of the results pages whose runs are summarised only in their tables, drawn from those
tables (so a picture cannot disagree with its page): ``python docs/figures.py``."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS = Path(__file__).resolve().parent
COLOURS = {"BN": "tab:gray", "GN": "tab:blue", "ND `paper`": "tab:orange", "ND `fast`": "tab:red", "none": "black"}


def table(page: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the table in ``page`` whose header row starts with ``header_start``."""
    lines = (DOCS / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def number(cell: str) -> float | None:
    """The first number of a cell (``**63.92** (201, 90.1 s)`` -> 63.92), None for ``-`` or text."""
    found = re.search(r"-?\d+(?:\.\d+)?", cell.replace("*", ""))
    return float(found.group()) if found and not cell.startswith(("-", "diverged")) else None


def grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    """Bars of each series side by side in each group; a missing value leaves a gap."""
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g, v in enumerate(values) if v is not None]
        colour = COLOURS.get(name, "tab:gray" if name.startswith("BN") else None)
        ax.bar(xs, [v for v in values if v is not None], width, label=name, color=colour)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def _save(fig, name: str) -> None:
    fig.tight_layout()
    fig.savefig(DOCS / name, dpi=110)
    plt.close(fig)


def norms_batch() -> None:
    rows = table("norms.md", "| model | batch | BN | GN |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, model in zip(axes, ("vgg11_cifar", "resnet18_cifar")):
        mine = [r for r in rows if r["model"] == model]
        grouped_bars(ax, [f"batch {r['batch']}" for r in mine],
                     {n: [number(r[n]) for r in mine] for n in ("BN", "GN", "ND `paper`", "ND `fast`", "none")},
                     "accuracy after 90 s (%)")
        ax.set_title(model)
    axes[0].legend(fontsize=8)
    _save(fig, "norms-batch.png")


def finetune_bars() -> None:
    rows = table("finetune.md", "| variant | 90 s | 5 min |")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    grouped_bars(ax, ["90 s", "5 min"], {r["variant"].split(" (")[0]: [number(r["90 s"]), number(r["5 min"])]
                                         for r in rows}, "vehicle test accuracy (%)")
    ax.legend(fontsize=7)
    _save(fig, "finetune-bars.png")


def fidelity_bars() -> None:
    rows = table("fidelity.md", "| init \\ first layer |")
    fig, ax = plt.subplots(figsize=(7, 3.4))
    columns = list(rows[0])[1:]
    grouped_bars(ax, [r["init \\ first layer"].split(" (")[0] + " init" for r in rows],
                 {c.split(" (")[0]: [float(r[c].split("**")[1]) for r in rows] for c in columns},
                 "1 epoch, mean of 2 seeds (%)")
    ax.axhline(48.9, color="tab:green", linestyle="--", label="the paper's code")
    ax.legend(fontsize=8)
    _save(fig, "fidelity-bars.png")


def speedrun_curve() -> None:
    rows = table("speedrun.md", "| epoch | 1 | 2 |")
    epochs = [float(e) for e in list(rows[0])[1:]]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for row, style in zip(rows, ("-", "--")):
        ax.plot(epochs, [number(row[str(e).removesuffix(".0")]) for e in epochs], style, marker="o",
                color="tab:gray", label=f"BN, {row['epoch'].replace(' %', '')}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, "speedrun-curve.png")


def speed_tradeoff() -> None:
    rows = table("speed.md", "| setting | step ratio, vgg11_cifar |")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, row in enumerate(rows):
        ratio, accuracy = number(row["step ratio, vgg11_cifar"]), number(row["1 epoch vgg11_cifar, mean of seeds 0-2"])
        if ratio is not None and accuracy is not None:
            ax.scatter(ratio, accuracy, color="tab:red" if "fast" in row["setting"] else "tab:orange")
            label = row["setting"].split(" (")[0].replace("`", "").replace(" without samples_per_dim", " (r: none)")
            ax.annotate(label, (ratio, accuracy), fontsize=7, xytext=(6, 5 if i % 2 else -11),
                        textcoords="offset points")
    ax.axvline(1.0, color="tab:gray", linestyle="--", label="BN's step")
    ax.set_xlabel("training step time / BN's (VGG-11, batch 128)")
    ax.set_ylabel("accuracy after 1 epoch (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, "speed-tradeoff.png")


if __name__ == "__main__":
    for draw in (norms_batch, finetune_bars, fidelity_bars, speedrun_curve, speed_tradeoff):
        draw()
