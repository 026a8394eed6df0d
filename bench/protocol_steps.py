"""Step time of each setting of the full-scale 20-epoch protocol (``bench/protocol_full.sh``): the
seconds axis of its curves is each setting's step time, measured here alone, times its steps.

    python bench/protocol_steps.py [--repeat 20] [--out docs/protocol-full/step_seconds.json]

VGG-11 as the bundled cifar10 recipe builds it with BN, with deconvolution (the paper's settings)
and with ``preset: fast``; one training step each (forward, cross-entropy, backward, SGD), batch
128 of random images (a step's cost does not depend on the pixels), interleaved so that machine
noise hits all alike; the medians go to ``--out``. The learning rate does not change a step's
cost, so both BN runs share BN's time. Data loading is left out. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer import paired_median_seconds  # noqa: E402
from network import build, train_step  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: The protocol's settings: each one's norm and recipe overrides (protocol_full.sh's flags).
SETTINGS = {"bn": ("bn", {}), "nd-paper": ("deconv", {}), "nd-fast": ("deconv", {"model.deconv.preset": "fast"})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "protocol-full" / "step_seconds.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    models = {name: build("vgg11_cifar", norm, overrides, torch.device("cpu"))
              for name, (norm, overrides) in SETTINGS.items()}
    medians = paired_median_seconds([train_step(m, x, y, lambda: None) for m in models.values()], args.repeat)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"model": "vgg11_cifar", "batch": 128, "threads": torch.get_num_threads(), "repeat": args.repeat,
           "torch": torch.__version__, "commit": commit,
           "step_seconds": {name: round(t, 4) for name, t in zip(models, medians)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for name, t in out["step_seconds"].items():
        print(f"{name:<9s} {t * 1e3:7.0f} ms  {t / medians[0]:.2f}x BN")


if __name__ == "__main__":
    main()
