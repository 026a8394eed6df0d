"""The full-scale 20-epoch protocol's results for the docs (runs: ``bench/protocol_full.sh``; step
times: ``bench/protocol_steps.py``).

    python bench/protocol_report.py [RUNS_DIR]

Copies each run's ``results.json``, ``metrics.csv`` and ``config.yaml`` from RUNS_DIR (if given) into
``docs/protocol-full/<run>/``, draws ``docs/protocol-full-curves.png`` from the finished runs' copies
(accuracy per epoch, and per training minute: each setting's measured step time times its steps) and
prints the results page's two tables: accuracy at epochs 1, 5, 10 and 20 beside the paper's, and what each
run had reached when BN's 20 epochs' time was up.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ndeconv.outputs import pyplot, save_figure
from ndeconv.rundir import read_metrics, read_results

DOCS = Path(__file__).resolve().parent.parent / "docs"
KEPT = DOCS / "protocol-full"
DATA = "../shared/data/cifar10"
#: Each run (protocol_full.sh's names): its label and the setting whose step time it has.
RUNS = {"bn-lr0.1": ("BN lr 0.1", "bn"), "bn-lr0.01": ("BN lr 0.01", "bn"),
        "nd-paper": ("ND `paper`", "nd-paper"), "nd-fast": ("ND `fast`", "nd-fast")}
STYLE = {"bn-lr0.1": dict(color="tab:gray", linestyle=":"), "bn-lr0.01": dict(color="tab:gray", linestyle="--"),
         "nd-paper": dict(color="tab:orange"), "nd-fast": dict(color="tab:red")}
EPOCHS = (1, 5, 10, 20)
#: VGG-16 on the 50,000 original images, GPU: the paper's Table 1 and its reproduction (seed 002).
PAPER = {"paper BN (VGG-16)": (14.12, 90.07), "paper ND (VGG-16)": (74.18, 93.25),
         "reproduction BN (VGG-16)": (13.61, 88.02), "reproduction ND (VGG-16)": (50.10, 89.48)}


def copy(runs_dir: Path) -> None:
    for name in RUNS:
        for file in ("results.json", "metrics.csv", "config.yaml"):
            if (runs_dir / name / file).is_file():
                (KEPT / name).mkdir(parents=True, exist_ok=True)
                text = (runs_dir / name / file).read_text()
                # the recipe's data path as the docs' command gives it, not this machine's
                (KEPT / name / file).write_text(re.sub(r"^  path: .*$", f"  path: {DATA}", text, count=1, flags=re.M))


def curve(name: str, step_seconds: dict[str, float]) -> list[tuple[int, float, float]]:
    """``(epoch, training minutes, accuracy %)`` after every epoch of a kept, finished run."""
    results = read_results(KEPT / name)
    minutes_per_epoch = results["steps"] // results["epochs"] * step_seconds[RUNS[name][1]] / 60
    rows = read_metrics(KEPT / name / "metrics.csv")
    return [(r["epoch"], r["epoch"] * minutes_per_epoch, 100 * r["accuracy"]) for r in rows]


def draw(curves: dict[str, list[tuple[int, float, float]]]) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name, points in curves.items():
        style = dict(marker="o", markersize=3, label=RUNS[name][0].replace("`", ""), **STYLE[name])
        axes[0].plot([e for e, _, _ in points], [a for _, _, a in points], **style)
        axes[1].plot([m for _, m, _ in points], [a for _, _, a in points], **style)
    axes[0].set_xlabel("epoch")
    axes[0].set_xticks(range(0, 21, 5))
    axes[1].set_xlabel("training minutes (step time x steps)")
    axes[0].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("VGG-11, all 50,000 CIFAR-10 images, 20 epochs, seed 0", fontsize=10)
    save_figure(fig, DOCS / "protocol-full-curves.png")


def tables(curves: dict[str, list[tuple[int, float, float]]]) -> str:
    epochs = "".join(f" epoch {e} |" for e in EPOCHS)
    lines = [f"| run |{epochs} training minutes |", "|---|" + "---|" * (len(EPOCHS) + 1)]
    for name, points in curves.items():
        at = {e: a for e, _, a in points}
        cells = "".join(f" {at[e]:.2f} |" if e in at else " - |" for e in EPOCHS)
        lines.append(f"| {RUNS[name][0]} |{cells} {points[-1][1]:.0f} |")
    for label, (first, last) in PAPER.items():
        lines.append(f"| {label} | {first:.2f} | - | - | {last:.2f} | - |")
    if "bn-lr0.1" in curves:
        budget = curves["bn-lr0.1"][-1][1]
        lines += ["", f"| run | epochs in BN's {budget:.0f} minutes | accuracy then |", "|---|---|---|"]
        for name, points in curves.items():
            done = [p for p in points if p[1] <= budget + 1e-9]
            lines.append(f"| {RUNS[name][0]} | {done[-1][0]} | {done[-1][2]:.2f} |" if done
                         else f"| {RUNS[name][0]} | 0 | - |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1:
        copy(Path(sys.argv[1]))
    step_seconds = json.loads((KEPT / "step_seconds.json").read_text())["step_seconds"]
    curves = {name: curve(name, step_seconds) for name in RUNS if (KEPT / name / "results.json").is_file()}
    draw(curves)
    print(tables(curves))


if __name__ == "__main__":
    main()
