"""Export a trained run: fuse the deconvolution into plain layers, then ONNX, TorchScript or safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .errors import RunDirError
from .fuse import fuse
from .outputs import atomic_write, check_writable
from .recipe import Recipe
from .rundir import load_run_model

__all__ = ["FORMATS", "export_model", "export_run", "check_onnx"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".fused.safetensors"}


def _example(recipe: Recipe, batch: int = 2) -> torch.Tensor:
    d = recipe.data
    return torch.randn(batch, d.channels, d.image_size, d.image_size, generator=torch.Generator().manual_seed(0))


def export_model(model: nn.Module, recipe: Recipe, fmt: str, out: str | Path) -> Path:
    """Fuse ``model`` and write it to ``out`` as ``fmt`` (``onnx``, ``torchscript``, ``safetensors``)."""
    if fmt not in FORMATS:
        raise RunDirError(f"fmt {fmt}: choose one of {', '.join(FORMATS)}", argument="fmt")
    fused = fuse(model)
    example = _example(recipe)
    d = recipe.data
    if fmt == "onnx":
        def write(tmp: str) -> None:
            torch.onnx.export(fused, (example,), tmp, input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False,
                              verbose=False)
    elif fmt == "torchscript":
        def write(tmp: str) -> None:
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(fused, example), tmp)
    else:
        metadata = {"model": recipe.model.name, "norm": f"{recipe.model.norm} (fused)",
                    "num_classes": str(d.num_classes), "in_chans": str(d.channels),
                    "image_size": str(d.image_size), "mean": json.dumps(d.mean), "std": json.dumps(d.std)}

        def write(tmp: str) -> None:
            state = {k: v.contiguous() for k, v in fused.state_dict().items()}
            save_file(state, tmp, metadata=metadata)
    return atomic_write(out, write)


def check_onnx(path: str | Path, model: nn.Module, recipe: Recipe) -> float:
    """Largest absolute difference between onnxruntime and PyTorch (the unfused eval model) on a test batch."""
    import onnxruntime

    example = _example(recipe, batch=3)
    runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = runtime.run(None, {"image": example.numpy()})
    with torch.no_grad():
        expected = model.eval()(example)
    return float((torch.from_numpy(logits) - expected).abs().max())


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, float | None]:
    """Export a run's model; ONNX files are checked with onnxruntime. Returns the file and the ONNX difference."""
    if fmt not in FORMATS:
        raise RunDirError(f"fmt {fmt}: choose one of {', '.join(FORMATS)}", argument="fmt")
    if out is not None:
        check_writable(out)
    model, recipe = load_run_model(run_dir)
    path = export_model(model, recipe, fmt, out or Path(run_dir) / f"model{FORMATS[fmt]}")
    diff = None
    if fmt == "onnx":
        try:
            diff = check_onnx(path, model, recipe)
        except ImportError:
            diff = None
    return path, diff
