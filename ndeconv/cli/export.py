"""``ndeconv export``: a trained run fused to plain layers, as ONNX, TorchScript or safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import command
from .common import console, friendly_errors


@command("export")
@friendly_errors
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory (from `ndeconv train`)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx, torchscript or safetensors."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: RUN_DIR/model.<format suffix>)."),
) -> None:
    """Fuse a trained run's deconvolution into plain convs and export it (ONNX checked with onnxruntime)."""
    from ..export import export_run

    path, diff = export_run(run_dir, format, out)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if diff is not None:
        console.print(f"onnxruntime vs PyTorch: max abs difference {diff:.2e}")
        if diff > 1e-3:
            from ..errors import RunDirError

            raise RunDirError(f"{path}: onnxruntime output differs from PyTorch by {diff:.2e}")
