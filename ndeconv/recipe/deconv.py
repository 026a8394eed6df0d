"""``DeconvConfig``: the settings of a conversion to network deconvolution, and its named presets.

Part of the configuration leaf: standard library only.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Literal, Mapping

from ..errors import RecipeError
from .types import check_type, quote

__all__ = ["DeconvConfig", "Range", "PRESETS", "PRESET_KEY", "REMOVED", "check_setting", "with_setting",
           "presets_first"]

#: Named bundles of :class:`DeconvConfig` settings (``model.deconv.preset``, ``deconvolve(preset=...)``),
#: each giving the same settings: ``paper`` is the paper's layer (their defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"block": 64, "scale": "none", "update_every": 1, "samples_per_dim": None},
    "fast": {"block": 16, "scale": "channel", "update_every": 2, "samples_per_dim": 64},
}

#: The recipe key that names a preset.
PRESET_KEY = "model.deconv.preset"

#: Settings removed in ndeconv 0.2.0 (never ahead of ``fast`` or of the paper's layer where they
#: were measured), with the value that behaves as every layer now does. A recipe or a run directory
#: that gives that value still loads; any other value is refused, naming the version.
REMOVED: dict[str, Any] = {"whiten_every": 1, "warm_start": 0, "whiten_depthwise": False}
REMOVED_IN = "0.2.0"


def with_setting(settings: Mapping[str, Any], name: str, value: Any) -> dict[str, Any]:
    """``settings`` with ``name`` set to ``value``; a new ``preset`` brings its bundle, replacing the
    settings it gives (set the others after it: :func:`presets_first`)."""
    bundle = PRESETS.get(value, {}) if name == "preset" and isinstance(value, str) else {}
    return {**settings, **bundle, name: value}


def presets_first(keys: Iterable[str]) -> list[str]:
    """``keys`` (setting names, or dotted recipe keys) with the preset's first, so that every other
    setting wins over what the preset bundles whatever their order."""
    return sorted(keys, key=lambda key: key not in ("preset", PRESET_KEY))


@dataclass(frozen=True)
class Range:
    """The values a numeric setting takes: ``low`` to ``high`` inclusive (``low`` excluded with
    ``open_low``); None on either side: unbounded."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def text(self) -> str:
        """``>= 1``, ``> 0``, ``in [1, 1000]``."""
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        if self.high is None:
            return f"{'>' if self.open_low else '>='} {num(self.low)}"
        return f"in {'(' if self.open_low else '['}{num(self.low)}, {num(self.high)}]"

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        return (self.low is None or above) and (self.high is None or value <= self.high)


def setting(default: Any, doc: str, valid: Range | None = None) -> Any:
    """A :class:`DeconvConfig` field: its default, what it does (``doc``, the one description) and
    its valid range; its type is the annotation."""
    return field(default=default, metadata={"doc": doc, "range": valid})


def check_setting(name: str, value: Any) -> Any:
    """``value`` checked against the type and range of the :class:`DeconvConfig` setting ``name``
    (an integer is accepted as a float). A bad value is a :class:`RecipeError` whose message is
    the same wherever it was given: a recipe (prefixed ``model.deconv.``), ``deconvolve`` or a
    layer's constructor."""
    checked, valid = check_type(_HINTS[name], value, name), _FIELDS[name].metadata["range"]
    if checked is not None and valid is not None and not valid.holds(checked):
        raise RecipeError(f"{name} must be {valid.text()}, got {quote(value)}")
    return checked


@dataclass(frozen=True, init=False)
class DeconvConfig:
    """The settings of a conversion to network deconvolution: :func:`ndeconv.deconvolve` takes one
    (or builds it from keywords), a recipe's ``model.deconv`` is one, and the layers take the
    per-layer part of it (:meth:`layer_settings`). Each setting's type, default, valid range and
    description are its field's (:func:`setting`): the recipe checks, ``deconvolve``'s, the layers'
    and the recipe reference all come from there.

    ``preset`` names a bundle of settings (:data:`PRESETS`) that fills in every setting not given:
    ``DeconvConfig(preset="fast", update_every=1)`` is ``fast`` with a fresh ``D`` on every step.
    Changing the preset of a config (a recipe override, a ``deconvolve`` keyword) replaces the
    settings the preset bundles and keeps the others (:func:`with_setting`).
    """

    block: int = setting(64, "Channels whitened together in a conv layer's patches (``block x k x k`` covariances; "
                             "a divisor of the channels, a whole conv group when grouped).", Range(1, 65536))
    block_fc: int = setting(512, "Features whitened together in the classifier (``Delinear``); 0 keeps it a plain "
                                 "``Linear``.", Range(0, 65536))
    sampling_stride: int = setting(3, "Statistics from every n-th output position along each axis.", Range(1, 4096))
    samples_per_dim: int | None = setting(
        None, "Conv layers after the stem: statistics from the coarsest sampling stride (at least "
              "``sampling_stride``) that still gives this many samples per dimension of the covariance "
              "(null: ``sampling_stride`` everywhere).", Range(1))
    small_batch: bool = setting(True, "A conv layer short of samples for its covariance (a small batch or feature "
                                      "map) takes every position, and shrinks a covariance still short towards "
                                      "its diagonal.")
    n_iter: int = setting(5, "Newton-Schulz steps for the inverse square root of the covariance.", Range(1, 1000))
    eps: float = setting(1e-5, "Added to the covariance's diagonal (and to variances).", Range(0, open_low=True))
    stem_n_iter: int | None = setting(None, "The first conv's Newton-Schulz steps (null: the architecture's own, "
                                            "else ``n_iter``).", Range(1, 1000))
    stem_freeze_iter: int | None = setting(None, "Training steps after which the first conv whitens with its running "
                                                 "estimate (null: the architecture's own, else never).", Range(0))
    stats_grad: bool = setting(True, "Gradient through the batch's mean and whitening matrix (false: constants in "
                                     "backward, a cheaper step).")
    max_samples: int | None = setting(None, "At most this many samples (evenly spaced) for the statistics.", Range(1))
    update_every: int = setting(1, "Recompute the statistics on every k-th training step; the last update's whiten "
                                   "the steps in between.", Range(1, 10**6))
    scale: Literal["none", "channel"] = setting(
        "none", "``channel``: standardise each layer's input channels first, so it is invariant to their scale "
                "on every step (also on steps that reuse the whitening).")
    preset: Literal["paper", "fast"] | None = setting(
        None, "A named bundle of these settings, ``paper`` (the defaults) or ``fast``: it fills in the ones not "
              "given.")

    def __init__(self, **settings: Any) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        unknown = [name for name in settings if name not in defaults]
        if unknown:
            raise TypeError(f"DeconvConfig: unknown setting '{unknown[0]}' (known: {', '.join(defaults)})")
        settings = {name: check_setting(name, value) for name, value in settings.items()}
        for name, value in {**defaults, **PRESETS[settings.get("preset") or "paper"], **settings}.items():
            object.__setattr__(self, name, value)

    def layer_settings(self, *, stem: bool = False) -> dict:
        """The keyword settings of a conv deconvolution layer (the stem's steps and freezing for the first conv)."""
        n_iter = self.stem_n_iter if stem and self.stem_n_iter is not None else self.n_iter
        return {"block": self.block, "sampling_stride": self.sampling_stride, "small_batch": self.small_batch,
                "samples_per_dim": None if stem else self.samples_per_dim, "eps": self.eps, "n_iter": n_iter,
                "freeze_iter": self.stem_freeze_iter if stem else None, "stats_grad": self.stats_grad,
                "max_samples": self.max_samples, "update_every": self.update_every, "scale": self.scale}

    def classifier_settings(self) -> dict:
        """The keyword settings of the classifier's ``Delinear``."""
        return {"block": self.block_fc, "eps": self.eps, "n_iter": self.n_iter, "stats_grad": self.stats_grad,
                "max_samples": self.max_samples, "update_every": self.update_every, "scale": self.scale}


DeconvConfig.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(DeconvConfig)])

_FIELDS = {f.name: f for f in fields(DeconvConfig)}
_HINTS = typing.get_type_hints(DeconvConfig)
