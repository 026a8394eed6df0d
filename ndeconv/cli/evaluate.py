"""``ndeconv evaluate`` and ``ndeconv predict``: a trained run on a split of data, and on image files."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import typer
from rich.progress import track
from rich.table import Table

from .app import command
from .common import console, err_console, friendly_errors


def _progress(description: str):
    return lambda items: track(items, description=description, console=err_console, transient=True)


def _default_folder(run: Path, local: Path, name: str) -> Path:
    """Where outputs go unless told: ``local`` for a run directory; for a hub id (whose files live in
    the hub's cache) ``REPO-NAME-<name>`` in the current directory."""
    from ..rundir import HF_PREFIX

    return Path(f"{run.name}-{name}") if str(run).startswith(HF_PREFIX) else local


@command("evaluate")
@friendly_errors
def evaluate_cmd(
    run: Path = typer.Argument(..., help="A finished run directory, or hf-hub:REPO_ID."),
    data: Optional[Path] = typer.Option(None, help="Other data of the run's layout (default: the run's own)."),
    split: Optional[str] = typer.Option(None, help="The split to evaluate (default: the one the run validated on)."),
    fuse: bool = typer.Option(False, "--fuse", help="Evaluate the fused model (plain convs)."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (default: as the run "
                                                                   "validated)."),
    out: Optional[Path] = typer.Option(None, help="Where evaluation.json and confusion.png go (default: the run "
                                                  "directory; for a hub id, REPO-NAME-evaluation)."),
) -> None:
    """The run's model on a split, with its own preprocessing: accuracy (top-5 from 100 classes), loss,
    per-class accuracy; mean IoU and pixel accuracy for segmentation. Writes evaluation.json and a
    confusion-matrix picture."""
    from ..evaluate import EVALUATION, evaluate_run, plot_confusion
    from ..outputs import check_writable, write_json

    folder = check_writable(out or _default_folder(run, run, "evaluation"), directory=True)
    evaluation = evaluate_run(run, data, split, fuse=fuse, tta=tta, progress=_progress("evaluating"))
    names = evaluation["classes"]
    title = f"{run.name}: {evaluation['split']} split, {evaluation['images']} images"
    table = Table(title=title, min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "top5", "miou", "pixel_accuracy"):
        if evaluation.get(key) is not None:
            table.add_row(key, f"{100 * evaluation[key]:.2f}%")
    table.add_row("loss", f"{evaluation['loss']:.4f}")
    console.print(table)
    if evaluation.get("per_class_accuracy"):
        per_class = Table(title="per class")
        per_class.add_column("class")
        per_class.add_column("accuracy", justify="right")
        for name, acc in zip(names, evaluation["per_class_accuracy"]):
            per_class.add_row(name, f"{100 * acc:.2f}%")
        console.print(per_class)
    write_json(folder / EVALUATION, evaluation)
    picture = plot_confusion(evaluation, folder / "confusion.png")
    console.print(f"wrote {folder / EVALUATION}, {picture}", highlight=False)


@command("predict")
@friendly_errors
def predict_cmd(
    run: Path = typer.Argument(..., help="A finished run directory, or hf-hub:REPO_ID."),
    images: list[Path] = typer.Argument(..., help="Image files and folders (searched recursively)."),
    top_k: int = typer.Option(5, min=1, help="Classes shown per image."),
    fuse: bool = typer.Option(False, "--fuse", help="Predict with the fused model (plain convs)."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the predictions to this CSV file."),
    out: Optional[Path] = typer.Option(None, help="Segmentation: folder of the predicted masks (PNG; default "
                                                  "RUN/masks, for a hub id REPO-NAME-masks)."),
) -> None:
    """Top-k classes with their probabilities for each image (segmentation: a mask PNG per image),
    decoded and normalised as the run's data was. A file that is not an image is named and the rest
    predicted; the exit status is then 1."""
    from PIL import Image

    from ..evaluate import predict_files
    from ..outputs import atomic_write, check_writable, write_text

    if csv_file is not None:
        check_writable(csv_file)
    predictions, bad = predict_files(run, images, top_k=top_k, fuse=fuse, progress=_progress("predicting"))
    if predictions and "mask" in predictions[0]:
        folder = check_writable(out or _default_folder(run, run / "masks", "masks"), directory=True)
        folder.mkdir(parents=True, exist_ok=True)
        for p in predictions:
            target = folder / (Path(p["file"]).stem + ".png")
            atomic_write(target, lambda tmp, m=p["mask"]: Image.fromarray(m.numpy()).save(tmp, format="PNG"))
        console.print(f"wrote {len(predictions)} masks to {folder}", highlight=False)
    else:
        table = Table(title=f"{run.name}: top {top_k}")
        table.add_column("image", overflow="fold")
        table.add_column("classes (probability)", overflow="fold")
        for p in predictions:
            table.add_row(p["file"], ", ".join(f"{name} {prob:.3f}" for name, prob in p["top"]))
        console.print(table)
        if csv_file is not None:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["file", *[f"{w}{i + 1}" for i in range(top_k) for w in ("class", "probability")]])
            for p in predictions:
                writer.writerow([p["file"], *[v for name, prob in p["top"] for v in (name, f"{prob:.6f}")]])
            write_text(csv_file, buf.getvalue())
            console.print(f"wrote {csv_file}", highlight=False)
    for path, why in bad:
        err_console.print(f"error: {path}: not an image ({why})", highlight=False, markup=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)
