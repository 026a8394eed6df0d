"""Checking a value against a type annotation: the one checker behind a recipe's keys and the
deconvolution settings, with the one way of naming a type and quoting a value in an error.

Part of the configuration leaf: standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any, Callable, Literal

from ..errors import RecipeError

__all__ = ["quote", "type_name", "check_type"]

_QUOTE = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_QUOTE.maxlevel, _QUOTE.maxtuple, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxset = 2, 4, 4, 4, 4
_QUOTE.maxstring = _QUOTE.maxother = 60


def quote(value: Any) -> str:
    """``repr(value)`` cut to a sane length, in bounded time (a YAML alias bomb's value is a huge
    nest of shared lists: its full repr would be megabytes)."""
    return _QUOTE.repr(value)


def type_name(tp: Any) -> str:
    """``tp`` in words: ``a number or null``, ``one of 'bn' | 'gn'``, ``a list of integers``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if float in args:  # an integer is a number: "a number", not "an integer or a number"
            args = tuple(a for a in args if a is not int)
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, type_name(item))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def check_type(tp: Any, value: Any, key: str, build: Callable[[type, dict, str], Any] | None = None) -> Any:
    """``value`` checked against the annotation ``tp`` (an integer is accepted as a float, made a
    float; a float must be finite); ``build(cls, mapping, key)`` makes a dataclass from a mapping.
    A mismatch is a :class:`RecipeError` ``"<key> must be <type>, got <value>"``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and build is not None and isinstance(value, dict):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return check_type(arg, value, key, build)
            except RecipeError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [check_type(item, v, f"{key}[{i}]", build) for i, v in enumerate(value)]
    elif tp is type(None):
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
    elif isinstance(tp, type) and not dataclasses.is_dataclass(tp) and isinstance(value, tp):
        return value
    raise RecipeError(f"{key} must be {type_name(tp)}, got {quote(value)}")
