"""``DeconvConfig``: the settings of a conversion to network deconvolution, and its named presets.

Part of the configuration leaf: standard library only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any, Iterable, Literal, Mapping

__all__ = ["DeconvConfig", "PRESETS", "PRESET_KEY", "REMOVED", "merge_settings", "presets_first"]

#: Named bundles of :class:`DeconvConfig` settings (``model.deconv.preset``, ``deconvolve(preset=...)``);
#: ``paper`` is the paper's layer (the defaults). Measured in ``docs/equal-time.md``.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {"block": 16, "scale": "channel", "update_every": 2, "samples_per_dim": 64},
}

#: The recipe key that names a preset.
PRESET_KEY = "model.deconv.preset"

#: Settings removed in ndeconv 0.2.0 (measured, never ahead of ``fast`` or of the paper's layer:
#: docs/speed.md), with the value that behaves as every layer now does. A recipe or a run directory
#: that gives that value still loads; any other value is refused, naming the version.
REMOVED: dict[str, Any] = {"whiten_every": 1, "warm_start": 0, "whiten_depthwise": False}
REMOVED_IN = "0.2.0"


def merge_settings(given: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` on top of ``given``; a ``preset`` among ``settings`` also takes out the given
    values of the settings it bundles, so the new preset's values replace them."""
    replaced: Mapping[str, Any] = {}
    if isinstance(settings.get("preset"), str):
        replaced = PRESETS.get(settings["preset"], {})
    return {**{name: value for name, value in given.items() if name not in replaced}, **settings}


def presets_first(keys: Iterable[str]) -> list[str]:
    """``keys`` (dotted recipe keys) with the preset's first, so that every other override wins over
    what the preset bundles whatever their order."""
    return sorted(keys, key=lambda key: key != PRESET_KEY)


@dataclass(frozen=True, init=False)
class DeconvConfig:
    """The settings of a conversion, the one place they are described (:func:`ndeconv.deconvolve`
    takes one, or builds it from keywords; a recipe's ``model.deconv`` is one).

    - ``block``: channels whitened together in a conv layer's patches (``block x k x k``
      covariances; ``gcd``-adjusted when it does not divide the channels, a whole conv group
      when grouped);
    - ``block_fc``: features whitened together in the classifier (``Delinear``); 0 keeps the
      classifier a plain ``Linear``;
    - ``sampling_stride``: statistics from every ``sampling_stride``-th output position;
    - ``samples_per_dim``: a conv layer after the stem samples its positions at the coarsest
      stride (at least ``sampling_stride``) that still gives that many samples per dimension of
      its covariance (fewer positions in large early feature maps; None: ``sampling_stride``
      everywhere). The stem keeps ``sampling_stride``: its covariance is narrow and cheap, and its
      estimate matters (sparser, it cost VGG-11 half a point an epoch);
    - ``small_batch``: a conv layer whose sampled positions give fewer samples than its covariance
      is wide (a small batch, a small feature map) takes every position, and one still short of
      samples shrinks its covariance towards the diagonal (Schafer-Strimmer; ``docs/method.md``);
    - ``n_iter``: Newton-Schulz steps for ``Cov^(-1/2)``; ``eps``: added to the covariance's diagonal;
    - ``stem_n_iter``, ``stem_freeze_iter``: the first conv's steps and the training step after
      which it keeps its running estimate (None: the architecture's own, :func:`ndeconv.stem_settings`,
      else ``n_iter`` and never);
    - ``stats_grad`` (False: the batch's mean and ``D`` are constants in backward),
      ``max_samples`` (at most that many samples, evenly spaced) and ``update_every`` (recompute
      the statistics on every k-th training step only): faster, non-default options;
    - ``scale``: ``none`` (the paper) or ``channel``: every layer standardises its input
      channels first, so it is invariant to their scale on every step, also on steps that reuse
      ``D`` (what makes ``update_every > 1`` train at the paper's learning rate);
    - ``preset``: a named bundle of the settings above (:data:`PRESETS`) that fills in every
      setting not given: ``DeconvConfig(preset="fast", update_every=1)`` is ``fast`` with a fresh
      ``D`` on every step (a setting given at its default value still replaces the preset's).

    Settings are keywords only. A config remembers which were given (:meth:`given_settings`), so a
    recipe override or a ``deconvolve`` keyword that names another preset keeps them and lets the
    preset fill in the rest; ``dataclasses.replace`` treats every setting as given.
    """

    block: int = 64
    """Channels whitened together in a conv layer's patches (``block x k x k`` covariances)."""
    block_fc: int = 512
    """Features whitened together in the classifier (``Delinear``); 0 keeps it a plain ``Linear``."""
    sampling_stride: int = 3
    """Statistics from every n-th output position along each axis."""
    samples_per_dim: int | None = None
    """Conv layers after the stem: the coarsest sampling stride that still gives this many samples per dimension."""
    small_batch: bool = True
    """Conv layers short of samples for their covariance: every position, then shrinkage towards the diagonal."""
    n_iter: int = 5
    """Newton-Schulz steps for the inverse square root of the covariance."""
    eps: float = 1e-5
    """Added to the covariance's diagonal (and to variances)."""
    stem_n_iter: int | None = None
    """The first conv's Newton-Schulz steps (``null``: the architecture's own, else ``n_iter``)."""
    stem_freeze_iter: int | None = None
    """Steps after which the first conv keeps its running estimate (``null``: the architecture's, else never)."""
    stats_grad: bool = True
    """Gradient through the batch's mean and whitening matrix (``false``: constants in backward)."""
    max_samples: int | None = None
    """At most this many samples (evenly spaced) for the statistics."""
    update_every: int = 1
    """Recompute the statistics on every k-th training step; the last update whitens in between."""
    scale: Literal["none", "channel"] = "none"
    """``channel``: standardise each layer's input channels first (invariant to their scale on every step)."""
    preset: Literal["paper", "fast"] | None = None
    """A named bundle of these settings, ``paper`` (the defaults) or ``fast``: it fills in the ones not given."""

    def __init__(self, **settings: Any) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        unknown = [name for name in settings if name not in defaults]
        if unknown:
            raise TypeError(f"DeconvConfig: unknown setting '{unknown[0]}' (known: {', '.join(defaults)})")
        preset = settings.get("preset")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        for name, value in {**defaults, **PRESETS[preset or "paper"], **settings}.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_given", tuple(name for name in defaults if name in settings))

    def given_settings(self) -> dict[str, Any]:
        """The settings this config was made with (the others came from its preset or the defaults)."""
        return {name: getattr(self, name) for name in self._given}

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
