"""``deconvolve``: turn a CNN's convs and batch norms into network deconvolution, in place; and
``convert_norm``: into any of the norms the library compares (GroupNorm, none), by the same rules."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from .calibrate import calibrate_layers
from .errors import UnsupportedLayerError
from .norms import NORM_NAMES
from .recipe.deconv import presets_first, with_setting
from .rules import ConversionContext, DeconvConfig, get_rule, needs_rule

__all__ = ["deconvolve", "convert_norm", "stem_settings", "ConversionReport", "UnsupportedLayerError"]


@dataclass
class ConversionReport:
    """What :func:`deconvolve` changed: ``(path, old type, new type)`` per replaced module, the
    layers kept for want of a rule, the modules whose in-place operation was turned off, and the
    settings the layers were given: the preset and every setting that differs from the paper's."""

    changes: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    not_inplace: list[str] = field(default_factory=list)
    preset: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> Counter:
        """``{"Conv2d -> FastDeconv": n, ...}``."""
        return Counter(f"{old} -> {new}" for _, old, new in self.changes)

    def __str__(self) -> str:
        given = ", ".join(f"{name}={value!r}" for name, value in self.settings.items())
        lines = [f"settings: {f'preset {self.preset!r}' if self.preset else 'no preset'}; "
                 + (f"differ from the paper's: {given}" if given else "the paper's")]
        lines += [f"{n:4d} x {change}" for change, n in sorted(self.counts().items())]
        lines += [f"skipped (no rule): {path} ({kind})" for path, kind in self.skipped]
        if self.not_inplace:
            lines.append(f"{len(self.not_inplace):4d} x in-place operation turned off")
        return "\n".join(lines) or "nothing to convert"


def _classifier_path(model: nn.Module) -> str | None:
    """Path of the classifier ``Linear``: timm's ``get_classifier()``, else the last ``Linear``."""
    paths = {id(m): name for name, m in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Linear) and id(head) in paths:
            return paths[id(head)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _conv_paths(model: nn.Module) -> dict[str, int]:
    """``{path: index}`` of every (direct) convolution in module order; the first (index 0) is the stem,
    which sees the image (``stem_n_iter`` applies to it)."""
    convs = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    return {name: i for i, name in enumerate(convs)}


def _turn_off_inplace(model: nn.Module) -> list[str]:
    """Set ``inplace = False`` on every module that has it (activations, dropout); return their paths.

    A batch norm used to hand the activation after it a fresh tensor. Without it the activation
    can run in place on a tensor that a deconvolution layer elsewhere (another branch, a
    shortcut) saved for its backward, and autograd fails ("modified by an inplace operation").
    """
    paths = []
    for name, module in model.named_modules():
        if isinstance(getattr(module, "inplace", None), bool) and module.inplace:
            module.inplace = False
            paths.append(name)
    return paths


def _with_settings(config: DeconvConfig, settings: dict[str, Any]) -> DeconvConfig:
    """``config`` with the keyword ``settings`` on top (a ``preset`` keyword first, replacing the
    settings it bundles); ``DeconvConfig`` names the known ones for an unknown one."""
    if not settings:
        return config
    merged = dataclasses.asdict(config)
    for name in presets_first(settings):
        merged = with_setting(merged, name, settings[name])
    return DeconvConfig(**merged)


def _differences(config: DeconvConfig, paper: DeconvConfig) -> dict[str, Any]:
    """The settings of ``config`` (its preset aside) that differ from ``paper``'s."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name != "preset" and getattr(config, f.name) != getattr(paper, f.name)}


def stem_settings(model: nn.Module) -> dict[str, int]:
    """The architecture's own first-layer settings (``n_iter``, ``freeze_iter``), from its
    ``pretrained_cfg["deconv_stem"]`` (see ``ndeconv.models.PAPER_STEM``); empty if it has none."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return dict(cfg.get("deconv_stem") or {})


def _apply_rules(model: nn.Module, norm: str, config: DeconvConfig, strict: bool) -> ConversionReport:
    """Replace every module that has a rule for the target ``norm`` by what the rule returns."""
    report = ConversionReport()
    convs, classifier = _conv_paths(model), _classifier_path(model)

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            path = f"{prefix}.{name}" if prefix else name
            rule = get_rule(child, norm)
            if rule is None:
                if needs_rule(child):
                    kind = f"{type(child).__module__}.{type(child).__qualname__}"
                    if strict:
                        raise UnsupportedLayerError(
                            f"no {NORM_NAMES[norm]} rule for layer '{path}' of type {kind}; "
                            "register one with @ndeconv.register_rule or pass strict=False"
                        )
                    warnings.warn(f"ndeconv: kept layer '{path}' of type {kind}: no {NORM_NAMES[norm]} rule",
                                  stacklevel=4)
                    report.skipped.append((path, kind))
                visit(child, path)
                continue
            index = convs.get(path, -1)
            ctx = ConversionContext(path, config, is_stem=index == 0, is_classifier=path == classifier,
                                    conv_index=max(index, 0))
            new = rule(child, ctx)
            if new is not child:
                setattr(parent, name, new)
                report.changes.append((path, type(child).__name__, type(new).__name__))

    visit(model, "")
    return report


def convert_norm(model: nn.Module, norm: str, *, strict: bool = True, config: DeconvConfig | None = None,
                 **settings: Any) -> nn.Module:
    """Convert a BN model's norms to ``norm`` in place and return it: ``"deconv"`` (:func:`deconvolve`,
    with ``config`` and ``settings``), ``"gn"`` (every batch norm a ``GroupNorm`` over 32 groups or
    the largest divisor of its channels below that, with its eps, scale and shift; timm's
    ``BatchNormAct2d`` timm's ``GroupNormAct`` with its activation), ``"none"`` (every norm
    removed, fused norm+act layers keep their activation, every conv gains the zero bias its norm's
    shift held), or ``"bn"`` (unchanged). The rules come from the same registry as deconvolution
    (:func:`ndeconv.register_rule` with ``norm=``, :mod:`ndeconv.norms`); a conv or norm layer
    without one raises :class:`UnsupportedLayerError` (``strict``) or is kept with a warning. The
    report is attached as ``model.norm_report``.
    """
    if norm not in NORM_NAMES:
        raise ValueError(f"norm must be one of {', '.join(NORM_NAMES)}, got {norm!r}")
    if norm == "deconv":
        return deconvolve(model, config, strict=strict, **settings)
    if config is not None or settings:
        raise TypeError(f"convert_norm: deconvolution settings do not apply to norm {norm!r}")
    if norm != "bn":
        model.norm_report = _apply_rules(model, norm, DeconvConfig(), strict)
    return model


def deconvolve(model: nn.Module, config: DeconvConfig | None = None, *, strict: bool = True,
               calibrate: Iterable[Any] | None = None, **settings: Any) -> nn.Module:
    """Convert ``model`` to network deconvolution in place and return it.

    The settings are a :class:`DeconvConfig` (``config``, default ``DeconvConfig()``), with any
    of its fields given as keywords on top: ``deconvolve(model, block=16)``,
    ``deconvolve(model, recipe.model.deconv, update_every=4)``.

    Every ``Conv2d`` becomes :class:`FastDeconv` (``Conv1d``: :class:`FastDeconv1d`, ``Conv3d``:
    :class:`FastDeconv3d`, ``ConvTranspose2d``: :class:`FastDeconvTranspose2d`, timm's
    ``Conv2dSame``: :class:`FastDeconvSame`; same geometry and weights), every batch norm is
    removed (fused norm+act layers keep their activation), and with ``block_fc > 0`` the
    classifier ``Linear`` becomes :class:`Delinear`. The first conv takes the stem's settings
    (left as None, the architecture's :func:`stem_settings`: the paper's VGG takes 15 steps and
    freezes after 100). Depthwise convs stay plain convolutions (their norms are removed all the
    same). The rules come from the registry
    (:func:`ndeconv.register_rule`). A conv or norm layer without a rule raises
    :class:`UnsupportedLayerError` naming it (``strict=True``) or is kept with a warning.
    In-place activations and dropouts are made out-of-place: with the norms gone they could
    overwrite a tensor a deconvolution layer saved for backward. Converting twice
    is a no-op. The report is attached as ``model.deconv_report``.

    The weights are kept as given, so a trained model converts unchanged. A whitened layer is
    nearly invariant to its weight's scale, so the starting scale sets the effective learning
    rate: to start from the paper's (PyTorch's default) initialisation instead of a timm model's
    BN-tuned one, call :func:`ndeconv.reset_parameters` on the model first.

    ``calibrate`` (batches, or a data loader of ``(input, target)``) keeps a trained model's
    function: the batches run through the BN model set every layer's running estimates, and each
    batch norm is folded into the deconvolution layer before it (or, after no conv, becomes a
    fixed :class:`~ndeconv.layers.ChannelAffine`), so the converted model's eval output is the BN
    model's (:mod:`ndeconv.calibrate`): fine-tuning starts from the pretrained function. It needs
    ``scale: none`` (a standardisation of the input would change the function).
    """
    config = _with_settings(config or DeconvConfig(), settings)
    if calibrate is not None:
        if config.scale != "none":
            raise ValueError("deconvolve: calibrate keeps the function of the BN model only with scale 'none'")
        bn_model = copy.deepcopy(model).eval()
        return calibrate_layers(bn_model, deconvolve(model, config, strict=strict), calibrate)
    stem = stem_settings(model)
    config = replace(config, stem_n_iter=stem.get("n_iter") if config.stem_n_iter is None else config.stem_n_iter,
                     stem_freeze_iter=stem.get("freeze_iter") if config.stem_freeze_iter is None
                     else config.stem_freeze_iter)
    report = _apply_rules(model, "deconv", config, strict)
    report.not_inplace = _turn_off_inplace(model)
    paper = replace(DeconvConfig(), stem_n_iter=stem.get("n_iter"), stem_freeze_iter=stem.get("freeze_iter"))
    report.preset, report.settings = config.preset, _differences(config, paper)
    model.deconv_report = report
    return model
