"""``ndeconv viz``: the paper's pictures (kernels, correlation, sparsity, the linear experiment) and
segmentation predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import command
from .common import console, friendly_errors

VIZ_KINDS = ("kernels", "correlation", "sparsity", "linear", "segmentation")


@command("viz")
@friendly_errors
def viz_cmd(
    kind: str = typer.Argument(..., help="kernels, correlation, sparsity, linear or segmentation."),
    out: Path = typer.Option(..., help="PNG file to write."),
    run: Optional[list[Path]] = typer.Option(None, help="kernels: the first layer's learned kernels of this run; "
                                                         "segmentation: the runs whose predictions to show "
                                                         "(repeatable)."),
    data: Optional[Path] = typer.Option(None, help="Images: a parquet directory or image folder (train split)."),
    image_column: str = typer.Option("img", help="Image column of --data parquet files."),
    kernel_size: int = typer.Option(5, help="Patch size for kernels and sparsity (correlation uses 3)."),
) -> None:
    """Render the paper's pictures from real images (default: scikit-learn's bundled photos)."""
    from .. import viz
    from ..errors import RecipeError
    from ..outputs import check_writable

    if kind not in VIZ_KINDS:
        raise RecipeError(f"viz {kind}: choose one of {', '.join(VIZ_KINDS)}")
    check_writable(out)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise RecipeError(f"--kernel-size {kernel_size}: must be a positive odd number")
    if kind == "segmentation":
        if not run:
            raise RecipeError("viz segmentation: give the runs to show with --run RUN_DIR (repeatable)")
        from ..norms import NORM_LABEL
        from ..rundir import load_run_recipe

        labels = [f"{NORM_LABEL[load_run_recipe(r).model.norm]} ({r.name})" for r in run]
        console.print(f"wrote {viz.plot_segmentation(dict(zip(labels, run)), out)}", highlight=False)
        return
    images = _viz_images(data, image_column) if kind != "linear" else None
    if kind == "kernels":
        if run:
            path = viz.plot_kernels(viz.run_kernels(run[0]), out,
                                    f"learned deconvolution kernels, first layer of {run[0]}")
        else:
            kernels = viz.deconv_kernels(images, kernel_size)
            path = viz.plot_kernels(kernels, out, f"deconvolution kernels of {kernel_size}x{kernel_size} patches")
    elif kind == "correlation":
        path = viz.plot_correlation(images, out)
    elif kind == "sparsity":
        path = viz.plot_sparsity(images, out, kernel_size)
    else:
        losses = viz.linear_experiment()
        path = viz.plot_linear(losses, out)
        for name, (lr, history) in losses.items():
            console.print(f"{name}: best lr {lr:g}, loss after 20 iterations {history[19]:.3f}, "
                          f"final {sum(history[-20:]) / 20:.3f}", highlight=False)
    console.print(f"wrote {path}", highlight=False)


def _viz_images(data: Path | None, image_column: str):
    """The bundled photos, or up to 64 training images of a dataset directory as float [0, 1]."""
    from .. import viz

    if data is None:
        return viz.sample_images()
    from ..data import load_path
    from ..data.tensors import decode_images
    from ..errors import DataError

    ds, image_column, _, _ = load_path(data.expanduser().resolve(), image_column=image_column, source="--data")
    columns = ds["train"].column_names
    if image_column not in columns:
        raise DataError(f"--data {data}: its train split has no column '{image_column}' (columns: "
                        f"{', '.join(columns)})")
    subset = ds["train"].select(range(min(64, len(ds["train"]))))
    return decode_images(subset, image_column, 3, 64, "--data").double() / 255.0
