"""The model card (``README.md``) a finished run directory gets, in the Hugging Face model-card format.

A run pushed to the hub (``ndeconv push``) shows it as the model's page: a YAML metadata header
(library, tags, dataset, metrics) and then the recipe, the results, the per-epoch curve and how
to load the model.
"""

from __future__ import annotations

import yaml

from ..recipe import Recipe, recipe_to_dict
from ..tasks import Task, resolve_task

__all__ = ["model_card"]

_NORM = {"deconv": "network deconvolution", "bn": "batch normalisation", "gn": "group normalisation",
         "none": "no normalisation"}
_TAG = {"deconv": "network-deconvolution", "bn": "batch-normalization", "gn": "group-normalization",
        "none": "no-normalization"}


def _metadata(recipe: Recipe, results: dict, t: Task) -> dict:
    data = recipe.data
    dataset = data.hub_id or data.builtin or recipe.name
    task, task_name, label, score = t.hub_tag, t.hub_name, t.card_metric, t.metric
    meta = {
        "library_name": "ndeconv",
        "tags": [task, "timm", "ndeconv", _TAG[recipe.model.norm]],
        "datasets": [dataset],
        "metrics": [score],
        "model-index": [{
            "name": f"{recipe.model.name}-{recipe.model.norm}-{recipe.name}",
            "results": [{
                "task": {"type": task, "name": task_name},
                "dataset": {"type": dataset, "name": recipe.name, "split": data.valid_split},
                "metrics": [{"type": score, "value": round(100 * results[score], 2), "name": f"{label} (%)"}],
            }],
        }],
    }
    return meta


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(recipe: Recipe, results: dict, rows: list[dict], task: Task | None = None) -> str:
    """The card's markdown for a run trained with ``recipe`` (its ``task``, resolved here if not given)
    that reported ``results`` and per-epoch ``rows``."""
    task = task or resolve_task(recipe)
    norm = _NORM[recipe.model.norm]
    score, label = task.metric, task.card_metric
    summary = [[label, f"{100 * results[score]:.2f}%"],
               [f"best {label}", f"{100 * results[f'best_{score}']:.2f}%"],
               ["validation loss", f"{results['valid_loss']:.4f}"],
               ["epochs", str(results["epochs"])],
               ["training images", str(results.get("train_images"))],
               ["training seconds", f"{results['seconds']:.1f} ({results['world_size']} process(es), "
                                    f"{results['device']}, {results['precision']})"],
               ["parameters", f"{results['params']:,}"]]
    if results.get("budget") is not None:
        summary.insert(4, ["time budget", f"{results['budget']}: {results['steps']} optimizer steps at "
                                          f"{results['step_seconds']:.4f} s measured"])
    if "top5" in results:
        summary.insert(1, ["top-5 accuracy", f"{100 * results['top5']:.2f}%"])
    if "pixel_accuracy" in results:
        summary.insert(1, ["pixel accuracy", f"{100 * results['pixel_accuracy']:.2f}%"])
    curve = [[str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['valid_loss']:.4f}", f"{100 * r[score]:.2f}",
              f"{r['seconds']:.1f}"] for r in rows]
    header = yaml.safe_dump(_metadata(recipe, results, task), sort_keys=False)
    recipe_yaml = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
    return f"""---
{header}---

# {recipe.model.name} with {norm} on {recipe.name}

A [timm](https://github.com/huggingface/pytorch-image-models) `{recipe.model.name}` trained with
{norm} ([Ye et al., ICLR 2020](https://arxiv.org/abs/1905.11926)) by
ndeconv {results['ndeconv']} (torch {results['torch']}).

## Results

{_table(["", "value"], summary)}

## Training curve

{_table(["epoch", "train loss", "valid loss", f"{label} (%)", "seconds"], curve)}

## How to load it

```python
import ndeconv

model = ndeconv.load("path/to/this/run")        # or "hf-hub:<user>/<repo>" once pushed
fused = ndeconv.load("path/to/this/run", fuse=True)  # plain convs, for export
```

Inputs are {recipe.data.channels}x{recipe.data.image_size}x{recipe.data.image_size} images normalised
with mean {recipe.data.mean} and std {recipe.data.std} (also in `model.pretrained_cfg`).

## Recipe

Reproduce with `ndeconv train config.yaml`:

```yaml
{recipe_yaml}```
"""
