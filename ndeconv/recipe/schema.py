"""The recipe's schema: the dataclasses a recipe file fills, the literals of its choices, and the
range checks its types cannot express (a problem is a :class:`RecipeError` naming the dotted key).

Part of the configuration leaf: standard library only (and ``DeconvConfig``, its sibling).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import RecipeError
from .deconv import DeconvConfig
from .types import quote

__all__ = ["Recipe", "DataSpec", "ModelSpec", "OptimSpec", "TrainSpec", "AugmentSpec", "Init", "LENGTH_KEYS",
           "LIMITS", "MAX_SEED", "parse_budget", "budget_label", "quote"]

Init = Literal["pytorch", "model"]
Norm = Literal["bn", "gn", "deconv", "none"]
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

    ``classes`` keeps the examples of those labels only, renumbered 0, 1, ... in the order given
    (a classification subset: ``[2, 3, 4, 5, 6, 7]`` are CIFAR-10's animals); ``num_classes`` is
    then their count.
    """

    num_classes: int
    """Classes the model predicts (after ``classes``, their count)."""
    image_size: int
    """Side of the square images the model sees (the training crop for segmentation)."""
    mean: list[float]
    """Per-channel mean the images are normalised with (of pixel values in [0, 1])."""
    std: list[float]
    """Per-channel standard deviation the images are normalised with."""
    channels: int = 3
    """Image channels: 3 (RGB) or 1 (grey)."""
    hub_id: str | None = None
    """A Hugging Face dataset id (``datasets.load_dataset``), used when neither ``path`` nor ``builtin`` is given."""
    path: str | None = None
    """A local directory of ``train*.parquet``/``test*.parquet`` files, or an image folder (``train/<class>/...``)."""
    builtin: str | None = None
    """An embedded dataset of the recipe's task: ``digits`` (classification), ``digit_canvas`` (segmentation)."""
    train_split: str = "train"
    """Name of the training split."""
    valid_split: str = "test"
    """Name of the split every epoch is validated on."""
    image_column: str = "image"
    """Column holding the images."""
    label_column: str = "label"
    """Column holding the class labels (integers)."""
    resize: int | None = None
    """Shorter side images are decoded to before cropping (segmentation); ``null``: ``image_size``."""
    cache: bool = True
    """Decode each split once into an on-disk uint8 cache (``$NDECONV_CACHE``); ``false``: decode per item."""
    classes: list[int] | None = None
    """Keep the examples of these labels only, renumbered 0, 1, ... in the order given."""
    mask_column: str = "mask"
    """Column holding the segmentation masks (class ids per pixel)."""
    ignore_index: int = 255
    """Mask value of unlabelled pixels (counted in neither loss nor metrics)."""


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

    Fine-tuning: ``pretrained`` is a BN model's weights (a timm checkpoint or safetensors file, or
    a finished run directory) loaded before any conversion (its classifier is dropped when the
    classes differ); ``calibrate: N`` converts with the model's function kept, from the statistics
    of N training images (:func:`ndeconv.deconvolve`, ``calibrate``); ``freeze`` whitens with the
    running estimates in training too (:func:`ndeconv.freeze`).
    """

    name: str
    """A timm model name (``ndeconv models``: the paper's CIFAR models); segmentation: ``torchvision:<model>``."""
    norm: Norm = "deconv"
    """``deconv``: network deconvolution (BatchNorm removed); ``bn``: the model as built; ``gn``: GroupNorm
    (32 groups, or the largest divisor of the channels below); ``none``: norms removed, nothing whitened
    (``ndeconv.convert_norm``)."""
    init: Init = "pytorch"
    """``pytorch``: PyTorch's default initialisation of every layer (the paper's); ``model``: the model's own."""
    drop_rate: float = 0.0
    """Dropout before the classifier."""
    feature_level: int = -1
    """Segmentation with a timm backbone: which of its feature maps feeds the FCN head."""
    deconv: DeconvConfig = field(default_factory=DeconvConfig)
    """The deconvolution's settings (``model.deconv.*``, below), the arguments of ``ndeconv.deconvolve``."""
    pretrained: str | None = None
    """A BN model's weights to start from: a timm checkpoint, a safetensors file or a finished run directory."""
    calibrate: int = 0
    """Convert with the model's function kept, calibrated on this many training images (0: a plain conversion)."""
    freeze: bool = False
    """Deconvolution layers whiten with their running estimates in training too (``ndeconv.freeze``)."""


@dataclass
class OptimSpec:
    """Optimizer, loss and learning-rate schedule (per iteration).

    ``nesterov`` uses Nesterov momentum (``torch.optim.SGD``); ``label_smoothing`` the
    label-smoothed cross-entropy; ``norm_lr_scale`` multiplies the learning rate of the shifts of
    the normalisation layers and divides their weight decay, so
    the decay per step stays the same. ``schedule: piecewise_linear`` follows ``lr_points``, pairs
    of (fraction of training, factor of ``lr``) from 0 to 1. ``lookahead_every = n`` pulls the
    weights to an exponential average of themselves every n steps and sets them to it (weight
    ``decay^n (step / steps)^lookahead_power`` on the average), and sets them to the average at
    the end.
    """

    lr: float
    """Peak learning rate."""
    name: Optimizer = "sgd"
    """``sgd`` (classic momentum, L2 weight decay on every parameter) or ``adamw``."""
    momentum: float = 0.9
    """Momentum (AdamW: beta1)."""
    weight_decay: float = 5e-4
    """Weight decay (SGD: L2 added to the gradient; AdamW: decoupled)."""
    schedule: Schedule = "cosine"
    """``cosine`` to 0, ``one_cycle``, ``constant``, or ``piecewise_linear`` through ``lr_points``."""
    nesterov: bool = False
    """Nesterov momentum (``torch.optim.SGD`` through fastai's ``OptimWrapper``)."""
    label_smoothing: float = 0.0
    """Label-smoothed cross-entropy (fastai's ``LabelSmoothingCrossEntropyFlat``) with this epsilon."""
    norm_lr_scale: float = 1.0
    """Learning-rate factor of the shifts of the norm layers (their decay divided by it)."""
    lr_points: list[list[float]] = field(default_factory=lambda: [[0.0, 1.0], [1.0, 1.0]])
    """``piecewise_linear``: [fraction of training, factor of ``lr``] pairs, fractions rising from 0 to 1."""
    lookahead_every: int = 0
    """Every n steps, pull the weights to their exponential average and set them to it (0: off)."""
    lookahead_decay: float = 0.95
    """Per-step decay of the average (raised to ``lookahead_every``)."""
    lookahead_power: float = 3.0
    """The average's weight grows as ``(step / steps)`` to this power."""


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
    """Images per step and process."""
    epochs: int | float | None = None
    """Epochs to train; a fraction ends within the last epoch (``9.9``). Exclusive with ``budget``."""
    budget: str | float | None = None
    """Training time instead of epochs: ``90s``, ``10m``, ``1h`` (validation not counted)."""
    steps: int | None = None
    """Optimizer steps to train; a budgeted run records the steps its calibration fixed here."""
    step_seconds: float | None = None
    """The step time a budgeted run measured (recorded, for the record)."""
    precision: Precision = "fp32"
    """``fp32``, or mixed precision ``bf16``/``fp16`` (Accelerate's autocast)."""
    seed: int = 0
    """Seed of the model, the data order and the augmentation."""
    limit_train: int | None = None
    """Train on a fixed random subset of this many training examples."""
    num_workers: int = 0
    """Data-loading worker processes (uncached data)."""
    log_with: list[str] = field(default_factory=list)
    """Accelerate trackers to log to (``tensorboard``, ``trackio``, ``wandb``, ...)."""
    tta: bool = False
    """Validate with test-time augmentation (mirror and one-pixel translations); ``accuracy_no_tta`` beside."""


@dataclass
class AugmentSpec:
    """Per-batch training augmentation (validation images are only normalised). Segmentation uses
    ``zoom`` (random resize factor range, then a random ``data.image_size`` crop) and ``flip``,
    applied to image and mask alike.

    ``crop_padding`` pads with ``padding_mode`` (zeros or a reflection) before the random crop.
    ``flip: alternate`` mirrors each training image at random once and then the whole set on
    every other epoch (every image is seen both ways in any two epochs)."""

    crop_padding: int = 0
    """Pad by this many pixels, then cut a random window of the original size (a random translation)."""
    flip: bool | Literal["alternate"] = False
    """Mirror at random (``true``), or each image at random once and the whole set every other epoch (``alternate``)."""
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    """What the crop pads with: ``zeros`` or ``reflect``."""
    random_resized_crop: bool = False
    """Random resized crop (ImageNet style) instead of the padded crop."""
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Area range of the random resized crop."""
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])
    """Segmentation: range of the random resize factor before the crop."""


@dataclass
class Recipe:
    """A complete training configuration."""

    name: str
    """The recipe's name (run directories and tables use it)."""
    data: DataSpec
    """Where the images come from and what they look like."""
    model: ModelSpec
    """The model and how it is normalised."""
    optim: OptimSpec
    """Optimizer, loss and learning-rate schedule."""
    train: TrainSpec
    """Length, batch size, precision, seed."""
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    """Training augmentation."""
    task: str = "classification"
    """A registered task: ``classification`` or ``segmentation``."""

    def __post_init__(self) -> None:
        _check_values(self)


#: Largest sizes a recipe may ask for: beyond them a value is a typo, not a plan (and would
#: exhaust memory before any error could name it).
LIMITS = {"data.image_size": 8192, "data.resize": 8192, "data.channels": 1024, "data.num_classes": 1_000_000,
          "train.batch_size": 65536, "train.epochs": 100_000, "train.steps": 10**9, "train.num_workers": 256,
          "optim.lookahead_every": 10**6}
#: Seeds are 32-bit, as numpy's.
MAX_SEED = 2**32 - 1


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
    if d.classes is not None and (len(d.classes) != d.num_classes or len(set(d.classes)) != len(d.classes)
                                  or min(d.classes) < 0):
        raise RecipeError(f"data.classes must be {d.num_classes} distinct labels >= 0 (data.num_classes), "
                          f"got {quote(d.classes)}")
    _positive("model.calibrate", r.model.calibrate, allow_zero=True)
    if (r.model.calibrate or r.model.freeze) and r.model.norm != "deconv":
        raise RecipeError("model.calibrate and model.freeze are settings of a deconvolution model (model.norm: deconv)")
    if d.path is None and d.builtin is None and d.hub_id is None:
        raise RecipeError("data needs a source: path, builtin or hub_id")
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
