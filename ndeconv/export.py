"""Export a trained run: fuse the deconvolution into plain layers, then ONNX, TorchScript or safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file
from torch import nn

from .errors import RunDirError, first_line
from .fuse import fuse
from .io import atomic_write, check_writable
from .recipe import Recipe
from .train.learner import build_model
from .train.run import CONFIG, WEIGHTS, load_run_recipe

__all__ = ["FORMATS", "load_run_model", "export_model", "export_run", "check_onnx"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".fused.safetensors"}


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, Recipe]:
    """The trained model of a finished run directory (eval mode) and its recipe."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        hint = " (training was interrupted: finish it with `ndeconv train --resume`)" \
            if (run_dir / "checkpoint.pth").is_file() else ""
        raise RunDirError(f"{run_dir}: incomplete run, no {WEIGHTS}{hint}")
    model = build_model(recipe)
    try:
        load_model(model, str(weights))
    except (SafetensorError, OSError) as e:
        first = first_line(e, 200)
        raise RunDirError(f"{weights}: unreadable weights, truncated or damaged ({first})") from None
    except (RuntimeError, KeyError) as e:
        first = first_line(e, 300)
        raise RunDirError(f"{weights}: does not match the model in {CONFIG} ({first})") from None
    return model.eval(), recipe


def _example(recipe: Recipe, batch: int = 2) -> torch.Tensor:
    d = recipe.data
    return torch.randn(batch, d.channels, d.image_size, d.image_size, generator=torch.Generator().manual_seed(0))


def export_model(model: nn.Module, recipe: Recipe, fmt: str, out: str | Path) -> Path:
    """Fuse ``model`` and write it to ``out`` as ``fmt`` (``onnx``, ``torchscript``, ``safetensors``)."""
    if fmt not in FORMATS:
        raise RunDirError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
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
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": example.numpy()})
    with torch.no_grad():
        expected = model.eval()(example)
    return float((torch.from_numpy(logits) - expected).abs().max())


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, float | None]:
    """Export a run's model; ONNX files are checked with onnxruntime. Returns the file and the ONNX difference."""
    if fmt not in FORMATS:
        raise RunDirError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
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
