"""Use a trained run: evaluate it on a split of its data (or of other data of the same layout), and
predict the classes of image files, both with the run's own preprocessing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import DataError, RunDirError
from .outputs import pyplot, save_figure
from .recipe import Recipe
from .rundir import is_finished, load_trained, read_results, resolve_run_dir
from .tasks import resolve_task
from .tta import TTA

__all__ = ["EVALUATION", "evaluate_run", "image_files", "predict_files", "plot_confusion"]

EVALUATION = "evaluation.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _finished_model(source: str | Path, fuse: bool, tta: bool | None) -> tuple[nn.Module, Recipe, dict, Path]:
    """A finished run's model as it will be used (:func:`ndeconv.rundir.load_trained`), its recipe,
    results and local directory; ``source`` is a run directory or ``hf-hub:REPO_ID``."""
    run_dir = resolve_run_dir(source)
    if not is_finished(run_dir):
        raise RunDirError(f"{run_dir}: not a finished run (no results.json): finish or resume it first")
    model, recipe, _ = load_trained(run_dir, fuse=fuse, tta=tta)
    return model, recipe, read_results(run_dir), run_dir


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, split: str | None = None, *,
                 fuse: bool = False, tta: bool | None = None,
                 progress: Callable[[Iterable], Iterable] | None = None) -> dict:
    """The metrics of a finished run's model (a run directory or ``hf-hub:REPO_ID``) on a split
    (default: the one it validated on) of its own data, or of ``data`` (a directory of the same
    layout), with its preprocessing and loss.

    Classification: accuracy (top-5 from 100 classes), loss, per-class accuracy and the confusion
    matrix (rows: true class); segmentation: mean IoU, pixel accuracy, loss, the confusion matrix.
    The numbers are those of the run's own validation on the same split. Returns them (with the
    class names) as written to ``evaluation.json`` by the command line.
    """
    model, recipe, results, run_dir = _finished_model(run_dir, fuse, tta)
    d = recipe.data
    data_spec = dataclasses.replace(d, path=str(Path(data).expanduser().resolve()) if data else d.path,
                                    valid_split=split or d.valid_split)
    recipe = dataclasses.replace(recipe, data=data_spec, train=dataclasses.replace(recipe.train, limit_train=1))
    task = resolve_task(recipe)
    dls = task.dataloaders(recipe)
    names = getattr(dls, "class_names", None)
    if data and names and results.get("classes") and names != results["classes"]:
        raise DataError(f"{data}: its classes ({', '.join(names[:5])}...) differ from the run's "
                        f"({', '.join(results['classes'][:5])}...)")
    from .segmentation.metrics import confusion_matrix, mean_iou, pixel_accuracy

    loss_fn, classes, dense = task.loss(recipe), d.num_classes, task.dense
    ignore, with_top5 = (d.ignore_index, False) if dense else (-1, classes >= 100)
    total_loss, count, top5 = 0.0, 0, 0
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    batches = progress(dls.valid) if progress else dls.valid
    with torch.no_grad():
        for x, y in batches:
            logits = model(x).float()
            total_loss += float(loss_fn(logits, y)) * len(y)
            count += len(y)
            confusion += confusion_matrix(logits.argmax(1), y, classes, ignore)
            if with_top5:
                top5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(1).sum())
    cm = confusion.double()
    source = str(data_spec.path or d.builtin or d.hub_id)
    evaluation = {"run": str(run_dir), "data": source, "split": data_spec.valid_split,
                  "images": count, "loss": total_loss / count, "fused": fuse, "tta": isinstance(model, TTA),
                  "classes": names or [str(i) for i in range(classes)], "confusion": confusion.tolist()}
    if dense:
        evaluation.update(miou=mean_iou(confusion), pixel_accuracy=pixel_accuracy(confusion))
    else:
        per_class = cm.diagonal() / cm.sum(1).clamp(min=1)
        evaluation.update(accuracy=pixel_accuracy(confusion),  # correct over all: top-1 accuracy here
                          per_class_accuracy=per_class.tolist() if classes <= 20 else None)
        if with_top5:
            evaluation["top5"] = top5 / count
    return evaluation


def plot_confusion(evaluation: dict, path: Path) -> Path:
    """The confusion matrix of an evaluation as a PNG, rows the true class, columns the prediction,
    each row as the share of its class."""
    cm = torch.tensor(evaluation["confusion"], dtype=torch.float64)
    shares = cm / cm.sum(1, keepdim=True).clamp(min=1)
    names = evaluation["classes"]
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = pyplot().subplots(figsize=(size, size))
    ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{Path(evaluation['run']).name}: {evaluation['split']}, {evaluation['images']} images", fontsize=9)
    return save_figure(fig, path)


def image_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The files named and every file under the folders named (recursively, sorted); a folder
    without an image file is a :class:`DataError`."""
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in found):
                raise DataError(f"{path}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            yield from (p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise DataError(f"{path}: no such file or folder")


def predict_files(run_dir: str | Path, paths: Iterable[str | Path], *, top_k: int = 5, fuse: bool = False,
                  tta: bool | None = None, batch_size: int = 64,
                  progress: Callable[[Iterable], Iterable] | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The top-k classes and probabilities of each image file (decoded, resized and normalised as
    the run's data was; grey images become RGB for an RGB model); segmentation: the predicted
    mask. Returns the predictions and the files that could not be read as images (with why)."""
    from .data.augment import BatchTransform
    from .data.tensors import decode_image

    model, recipe, results, _ = _finished_model(run_dir, fuse, tta)
    d, dense = recipe.data, resolve_task(recipe).dense
    names = results.get("classes") or [str(i) for i in range(d.num_classes)]
    normalise = BatchTransform(d.image_size, d.mean, d.std, train=False)
    files, bad, predictions = list(image_files(paths)), [], []
    chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    with torch.no_grad():
        for chunk in (progress(chunks) if progress else chunks):
            images, good = [], []
            for path in chunk:
                try:
                    images.append(torch.from_numpy(decode_image({"path": str(path)}, d.channels,
                                                                d.resize or d.image_size)))
                    good.append(path)
                except Exception as e:  # PIL raises many types for what is not an image
                    bad.append((path, " ".join(str(e).split())[:120]))
            if not images:
                continue
            x, _ = normalise((torch.stack(images), torch.zeros(len(images), dtype=torch.long)))
            logits = model(x).float()
            if dense:
                predictions += [{"file": str(p), "mask": m} for p, m in zip(good, logits.argmax(1).to(torch.uint8))]
                continue
            probs, classes = logits.softmax(1).topk(min(top_k, logits.shape[1]), dim=1)
            predictions += [{"file": str(p), "top": [(names[c], float(q)) for c, q in zip(cs.tolist(), ps.tolist())]}
                            for p, cs, ps in zip(good, classes, probs)]
    return predictions, bad
