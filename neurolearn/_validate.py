"""Parameter validation shared by every frozen configuration object.

Every public configuration object of neurolearn (objectives, credit assignment methods, plasticity
rules, circuits) is an immutable dataclass whose ``__post_init__`` calls these helpers, so that a bad
value fails at construction with a message naming the owner, the parameter, the allowed values and
the value received, e.g. ``SelfDefinedTarget: k must be an integer >= 1, got 0``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable


class ParameterError(ValueError):
    """A parameter is outside its allowed values (a ``ValueError`` naming the parameter)."""


def _fail(owner: str, name: str, allowed: str, value: Any) -> None:
    raise ParameterError(f"{owner}: {name} must be {allowed}, got {value!r}")


def check_int(owner: str, name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]`` (bounds optional), else raise."""
    allowed = "an integer" + _range_text(low, high, True, True)
    if isinstance(value, bool) or not isinstance(value, Integral):
        _fail(owner, name, allowed, value)
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(owner, name, allowed, value)
    return int(value)


def check_float(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite real in the given (half-)open interval, else raise."""
    allowed = "a finite number" + _range_text(low, high, not low_open, not high_open)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        _fail(owner, name, allowed, value)
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        _fail(owner, name, allowed, value)
    if high is not None and (v > high or (high_open and v == high)):
        _fail(owner, name, allowed, value)
    return v


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = tuple(choices)
    if value not in choices:
        _fail(owner, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_bool(owner: str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise."""
    if not isinstance(value, bool):
        _fail(owner, name, "true or false", value)
    return value


def _range_text(low, high, low_closed, high_closed) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>=' if low_closed else '>'} {low:g}"
    if low is None:
        return f" {'<=' if high_closed else '<'} {high:g}"
    return f" in {'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
