"""Recipes: typed training configurations loaded from YAML, with validation and overrides.

A recipe file has five sections (``data``, ``model``, ``optim``, ``train``, ``augment``) plus a
``name``. Loading checks every key and type against the dataclasses below; a problem is a
:class:`RecipeError` whose one-line message names the file and the dotted key.

Floor: above the rules (``DeconvConfig``) and the task registry; imports nothing that trains.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import RecipeError
from .init import Init
from .rules import DeconvConfig
from .tasks import get_task, task_of_builtin

__all__ = [
    "Recipe", "DataSpec", "ModelSpec", "OptimSpec", "TrainSpec", "AugmentSpec",
    "load_recipe", "parse_recipe", "apply_override", "recipe_to_dict", "find_recipe", "bundled_recipes",
    "LENGTH_KEYS", "LIMITS", "parse_budget", "budget_label", "read_yaml", "read_text_file", "quote",
    "RecipeLoader",
]

Norm = Literal["bn", "deconv"]
Precision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["cosine", "one_cycle", "constant", "piecewise_linear"]
Optimizer = Literal["sgd", "adamw"]


@dataclass
class DataSpec:
    """Where the images come from and what they look like.

    Exactly one source is used: ``path`` (a directory of ``train*.parquet`` / ``test*.parquet``
    files, or an image folder with one sub-folder per split), else ``builtin`` (``digits``:
    scikit-learn's bundled 8x8 digits), else ``hub_id`` (``datasets.load_dataset``).

    Segmentation (``task: segmentation``) reads a mask per image from ``mask_column`` (class ids,
    ``ignore_index`` for unlabelled pixels); ``path`` may also be a Cityscapes folder
    (``leftImg8bit/`` + ``gtFine/``, label ids mapped to the 19 train ids), ``builtin:
    digit_canvas`` is the embedded set; ``image_size`` is the training crop and ``resize`` the
    shorter side images are decoded to.
    """

    num_classes: int
    image_size: int
    mean: list[float]
    std: list[float]
    channels: int = 3
    hub_id: str | None = None
    path: str | None = None
    builtin: str | None = None  # an embedded dataset of the recipe's task (ndeconv.tasks)
    train_split: str = "train"
    valid_split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    resize: int | None = None
    cache: bool = True
    mask_column: str = "mask"
    ignore_index: int = 255


@dataclass
class ModelSpec:
    """A timm model name, its starting weights and how it is normalised: ``bn`` as built, or
    ``deconv`` (with ``deconv``: the arguments of :func:`ndeconv.deconvolve`).

    ``init: pytorch`` (the default) starts every layer from PyTorch's default initialisation, as
    the paper's models did, for BN and deconvolution alike; ``init: model`` keeps the timm
    model's own (often tuned for BN: with deconvolution it trains more slowly at the same
    learning rate, see :mod:`ndeconv.init`).

    For segmentation, ``name`` is ``torchvision:<model>`` (FCN, DeepLabv3, LR-ASPP) or a timm
    backbone whose ``feature_level``-th feature map feeds an FCN head.
    """

    name: str
    norm: Norm = "deconv"
    init: Init = "pytorch"
    drop_rate: float = 0.0
    feature_level: int = -1
    deconv: DeconvConfig = field(default_factory=DeconvConfig)


@dataclass
class OptimSpec:
    """Optimizer, loss and learning-rate schedule (per iteration).

    ``nesterov`` uses Nesterov momentum (``torch.optim.SGD``); ``label_smoothing`` the
    label-smoothed cross-entropy; ``norm_lr_scale`` multiplies the learning rate of the shifts of
    the normalisation layers (and of a patch-whitening stem) and divides their weight decay, so
    the decay per step stays the same. ``schedule: piecewise_linear`` follows ``lr_points``, pairs
    of (fraction of training, factor of ``lr``) from 0 to 1. ``lookahead_every = n`` pulls the
    weights to an exponential average of themselves every n steps and sets them to it (weight
    ``decay^n (step / steps)^lookahead_power`` on the average), and sets them to the average at
    the end.
    """

    lr: float
    name: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    nesterov: bool = False
    label_smoothing: float = 0.0
    norm_lr_scale: float = 1.0
    lr_points: list[list[float]] = field(default_factory=lambda: [[0.0, 1.0], [1.0, 1.0]])
    lookahead_every: int = 0
    lookahead_decay: float = 0.95
    lookahead_power: float = 3.0


@dataclass
class TrainSpec:
    """Length, batch size, precision and seed of a run, and the experiment trackers it logs to
    (``log_with``: Accelerate tracker names such as ``tensorboard``, ``trackio``, ``wandb``).

    A run's length is ``epochs`` (a fraction ends within the last epoch, ``9.9``), or a time
    ``budget`` of training seconds (``90s``, ``10m``, ``1h``; validation not counted), or a number
    of optimizer ``steps``. ``tta`` validates with test-time augmentation (the mean logits of the
    image and its mirror, averaged half and half with the same over two one-pixel translations;
    ``accuracy_no_tta`` is recorded beside it). A budgeted run times its
    first steps and fixes ``steps`` (and the measured ``step_seconds``) before training, so it can
    be resumed or repeated exactly; the schedule spans exactly those steps.
    """

    batch_size: int
    epochs: int | float | None = None
    budget: str | float | None = None
    steps: int | None = None
    step_seconds: float | None = None
    precision: Precision = "fp32"
    seed: int = 0
    limit_train: int | None = None
    num_workers: int = 0
    log_with: list[str] = field(default_factory=list)
    tta: bool = False


@dataclass
class AugmentSpec:
    """Per-batch training augmentation (validation images are only normalised). Segmentation uses
    ``zoom`` (random resize factor range, then a random ``data.image_size`` crop) and ``flip``,
    applied to image and mask alike.

    ``crop_padding`` pads with ``padding_mode`` (zeros or a reflection) before the random crop.
    ``flip: alternate`` mirrors each training image at random once and then the whole set on
    every other epoch (every image is seen both ways in any two epochs)."""

    crop_padding: int = 0
    flip: bool | Literal["alternate"] = False
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    random_resized_crop: bool = False
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])


@dataclass
class Recipe:
    """A complete training configuration."""

    name: str
    data: DataSpec
    model: ModelSpec
    optim: OptimSpec
    train: TrainSpec
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    task: str = "classification"  # a registered task (ndeconv.tasks)

    def __post_init__(self) -> None:
        _check_values(self)


_QUOTE = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_QUOTE.maxlevel, _QUOTE.maxtuple, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxset = 2, 4, 4, 4, 4
_QUOTE.maxstring = _QUOTE.maxother = 60


def quote(value: Any) -> str:
    """``repr(value)`` cut to a sane length, in bounded time (a YAML alias bomb's value is a huge
    nest of shared lists: its full repr would be megabytes)."""
    return _QUOTE.repr(value)


#: Largest sizes a recipe may ask for: beyond them a value is a typo, not a plan (and would
#: exhaust memory before any error could name it).
LIMITS = {"data.image_size": 8192, "data.resize": 8192, "data.channels": 1024, "data.num_classes": 1_000_000,
          "train.batch_size": 65536, "train.epochs": 100_000, "train.steps": 10**9, "train.num_workers": 256,
          "model.deconv.block": 65536, "model.deconv.block_fc": 65536, "model.deconv.n_iter": 1000,
          "model.deconv.sampling_stride": 4096, "model.deconv.update_every": 10**6,
          "model.deconv.whiten_every": 10**6, "model.deconv.warm_start": 1000, "optim.lookahead_every": 10**6}
#: Seeds are 32-bit, as numpy's.
MAX_SEED = 2**32 - 1


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as people write them: ``5e-4`` and ``1E5`` are floats
    (YAML 1.2's rule; YAML 1.1 wants a dot, ``5.0e-4``, and reads the rest as strings)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    """Parse recipe YAML (see :class:`RecipeLoader`)."""
    return yaml.load(text, Loader=RecipeLoader)


#: The keys of ``train`` that set a run's length; setting one by override clears the others.
LENGTH_KEYS = ("epochs", "budget", "steps")

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|sec|m|min|h)?\s*$")


def parse_budget(value: str | float, where: str = "train.budget") -> float:
    """Seconds of a time budget: ``90s``, ``1.5m``, ``10m``, ``1h``, or a plain number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if str(value).strip().startswith("-"):
            raise RecipeError(f"{where} must be > 0, got {quote(value)}")
        if match is None:
            raise RecipeError(f"{where}: expected a duration such as 90s, 10m or 1h, got {quote(value)}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise RecipeError(f"{where} must be > 0, got {quote(value)}")
    return seconds


def budget_label(value: str | float) -> str:
    """A budget as written in run names and tables: ``90s``, ``10m``, ``1h`` (a plain number gets ``s``)."""
    text = str(value).strip().replace(" ", "")
    return text if text[-1:].isalpha() else f"{text}s"



def _positive(where: str, value: float | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise RecipeError(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _get_key(r: Recipe, key: str) -> Any:
    node: Any = r
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_values(r: Recipe) -> None:
    """Range checks the types cannot express."""
    for key, limit in LIMITS.items():
        value = _get_key(r, key)
        if value is not None and value > limit:
            raise RecipeError(f"{key} must be at most {limit}, got {value}")
    if not 0 <= r.train.seed <= MAX_SEED:
        raise RecipeError(f"train.seed must be in [0, {MAX_SEED}], got {quote(r.train.seed)}")
    d = r.data
    for key in ("num_classes", "image_size", "channels"):
        _positive(f"data.{key}", getattr(d, key))
    for key in ("mean", "std"):
        if len(getattr(d, key)) != d.channels:
            raise RecipeError(f"data.{key} has {len(getattr(d, key))} values, data.channels is {d.channels}")
    if any(s <= 0 for s in d.std):
        raise RecipeError(f"data.std must be > 0, got {d.std}")
    if d.path is None and d.builtin is None and d.hub_id is None:
        raise RecipeError("data needs a source: path, builtin or hub_id")
    for key in ("block", "block_fc", "sampling_stride", "n_iter"):
        _positive(f"model.deconv.{key}", getattr(r.model.deconv, key), allow_zero=key == "block_fc")
    _positive("model.deconv.eps", r.model.deconv.eps)
    _positive("model.deconv.max_samples", r.model.deconv.max_samples)
    _positive("model.deconv.update_every", r.model.deconv.update_every)
    _positive("model.deconv.whiten_every", r.model.deconv.whiten_every)
    _positive("model.deconv.warm_start", r.model.deconv.warm_start, allow_zero=True)
    if r.model.deconv.whiten_every > 1 and r.model.deconv.scale == "none":
        raise RecipeError("model.deconv.whiten_every > 1 needs model.deconv.scale sample or channel: the convs "
                          "between whitened ones only standardise, and a whitened one must stay scale-invariant "
                          "too")
    _positive("optim.lr", r.optim.lr)
    _positive("optim.weight_decay", r.optim.weight_decay, allow_zero=True)
    _check_optim(r.optim)
    _check_length(r.train)
    _positive("train.batch_size", r.train.batch_size)
    _positive("train.limit_train", r.train.limit_train)
    _positive("augment.crop_padding", r.augment.crop_padding, allow_zero=True)
    lo_hi = r.augment.scale
    if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
        raise RecipeError(f"augment.scale must be [min, max] with 0 < min <= max <= 1, got {lo_hi}")
    zoom = r.augment.zoom
    if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
        raise RecipeError(f"augment.zoom must be [min, max] with 0 < min <= max, got {zoom}")
    task = get_task(r.task)
    if d.builtin is not None:
        kind = task_of_builtin(d.builtin)
        if kind is None:
            raise RecipeError(f"data.builtin must be one of {', '.join(task.builtins)}, got {quote(d.builtin)}")
        if kind != r.task:
            raise RecipeError(f"data.builtin: '{d.builtin}' is a {kind} set, the recipe's task is {r.task}")


def _check_optim(o: OptimSpec) -> None:
    """Ranges of the loss, lookahead and schedule keys."""
    if not 0 <= o.label_smoothing < 1:
        raise RecipeError(f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}")
    _positive("optim.norm_lr_scale", o.norm_lr_scale)
    _positive("optim.lookahead_every", o.lookahead_every, allow_zero=True)
    if not 0 <= o.lookahead_decay <= 1:
        raise RecipeError(f"optim.lookahead_decay must be in [0, 1], got {o.lookahead_decay}")
    _positive("optim.lookahead_power", o.lookahead_power, allow_zero=True)
    points = o.lr_points
    where = "optim.lr_points"
    if any(len(p) != 2 for p in points) or len(points) < 2:
        raise RecipeError(f"{where} must be at least two [fraction, factor] pairs, got {quote(points)}")
    fractions = [p[0] for p in points]
    if fractions[0] != 0 or fractions[-1] != 1 or any(a >= b for a, b in zip(fractions, fractions[1:])):
        raise RecipeError(f"{where}: the fractions must rise from 0 to 1, got {fractions}")
    if any(p[1] < 0 for p in points):
        raise RecipeError(f"{where}: the factors must be >= 0, got {[p[1] for p in points]}")


def _check_length(t: TrainSpec) -> None:
    """Exactly one way of giving the run's length: ``epochs``, ``budget`` (optionally with the
    ``steps`` it was calibrated to) or ``steps``."""
    _positive("train.epochs", t.epochs)
    _positive("train.steps", t.steps)
    _positive("train.step_seconds", t.step_seconds)
    if t.budget is not None:
        parse_budget(t.budget)
        if t.epochs is not None:
            raise RecipeError("train.epochs and train.budget are exclusive: give one of them")
    elif t.epochs is not None and t.steps is not None:
        raise RecipeError("train.epochs and train.steps are exclusive: give one of them")
    elif t.epochs is None and t.steps is None:
        raise RecipeError("train needs a length: epochs, budget or steps")


# --- typed parsing ---------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if float in args:  # an integer is a number: "a number", not "an integer or a number"
            args = tuple(a for a in args if a is not int)
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _type_name(item))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{key} must be a mapping, got {quote(value)}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key} must be {_type_name(tp)}, got {quote(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise RecipeError(f"{key} must be one of {_type_name(tp)}, got {quote(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be {_type_name(tp)}, got {quote(value)}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise RecipeError(f"{key} must be a finite number, got {quote(value)}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise RecipeError(f"{key} must be {_type_name(tp)}, got {quote(value)}")


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """``cls(**raw)`` with every key checked; all problems of ``raw`` are reported together."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for key in raw:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            hint = _did_you_mean(str(key), list(fields)) or f" (known in {prefix or 'the top level'}: " \
                f"{', '.join(fields)})"
            problems.append(f"unknown key '{where}'{hint}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in raw:
            try:
                kwargs[name] = _coerce(hints[name], raw[name], where)
            except RecipeError as e:
                problems.append(str(e))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"missing required key '{where}'")
    if problems:
        raise RecipeError("; ".join(problems))
    return cls(**kwargs)


def parse_recipe(raw: Any, source: str = "<recipe>") -> Recipe:
    """Build a :class:`Recipe` from a mapping; errors name ``source`` and every bad key."""
    if raw is None:
        raise RecipeError(f"{source}: the recipe is empty")
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    try:
        return _build(Recipe, raw, "")
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain data (what ``config.yaml`` holds); ``parse_recipe`` inverts it."""
    return dataclasses.asdict(recipe)


def apply_override(recipe: Recipe, key: str, value: Any, source: str | None = None) -> Recipe:
    """A copy of ``recipe`` with the dotted ``key`` set to ``value``.

    Strings are read as YAML scalars (``"0.05"`` gives a float, ``"5e-4"`` too); the new value is
    type-checked like the file's. Errors name ``source`` (default ``override key``).
    """
    source = source or f"override {key}"
    raw = recipe_to_dict(recipe)
    node, parts = raw, key.split(".")
    cls: Any = Recipe
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        if part not in names:
            where = ".".join(parts[: i + 1])
            hint = _did_you_mean(part, names) or (f" (known: {', '.join(names)})" if names else "")
            raise RecipeError(f"{source}: unknown key '{where}'{hint}")
        if i < len(parts) - 1:
            cls = typing.get_type_hints(cls)[part]
            node = node[part]
    if isinstance(value, str):
        try:
            value = read_yaml(value) if value.strip() else value
        except yaml.YAMLError:
            pass
    node[parts[-1]] = value
    if parts[:-1] == ["train"] and parts[-1] in LENGTH_KEYS and value is not None:
        for other in (*LENGTH_KEYS, "step_seconds"):  # a new length replaces the recipe's (epochs by budget, ...)
            if other != parts[-1]:
                node[other] = None
    return parse_recipe(raw, source)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None,
                sources: dict[str, str] | None = None) -> Recipe:
    """Read a recipe file (or a bundled recipe's name) and apply ``{dotted.key: value}`` overrides;
    ``sources`` names where each override came from, for its errors (the command line passes the
    option it read it from)."""
    file = find_recipe(path)
    try:
        raw = read_yaml(read_text_file(file, "recipe"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{file}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    recipe = parse_recipe(raw, str(file))
    for key, value in (overrides or {}).items():
        recipe = apply_override(recipe, key, value, (sources or {}).get(key))
    return recipe


def read_text_file(path: Path, what: str) -> str:
    """A text file's contents; a binary or undecodable one is a :class:`RecipeError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a {what} (not UTF-8 text: byte {e.start} cannot be decoded)") from None


def bundled_recipes() -> dict[str, Path]:
    """The recipes shipped with ndeconv: ``{name: path}``."""
    from importlib import resources

    root = Path(str(resources.files("ndeconv") / "recipes"))
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def find_recipe(path: str | Path) -> Path:
    """A recipe file path, or the bundled recipe of that name (``cifar10`` -> ``recipes/cifar10.yaml``)."""
    file = Path(path)
    if file.is_file():
        return file
    bundled = bundled_recipes()
    if file.suffix == "" and str(path) in bundled:
        return bundled[str(path)]
    if file.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    hint = f" (bundled recipes: {', '.join(bundled)})" if bundled else ""
    raise RecipeError(f"{path}: recipe file not found{hint}")
