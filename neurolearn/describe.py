"""Frozen, validated descriptions and the registry that names them (DESIGN.md section 3).

Every part a user composes -- objectives, credit methods, plasticity rules, layers, networks,
circuits, and the run's own data / training / evaluation settings -- is a frozen dataclass derived
from :class:`Description`. Its tunable fields are declared with :func:`param`, which carries the
default, the allowed values and a help text: the one source of truth from which the object validates
itself when made (``SelfDefinedTarget(k=0)`` raises ``SelfDefinedTarget: k must be an integer >= 1,
got 0``), the recipe derives its section (keys, defaults, checks, help) and ``neurolearn keys`` prints
its documentation. Fields declared without :func:`param` (e.g. a credit method's plasticity rule) are
part of the object but not recipe keys.

A description registers itself under a kind and a name with :func:`register`, so that a recipe's
``[credit] type = "feedback_alignment"`` finds a class defined in a user's own file; nothing in the
library lists the types (Nengo's split between frozen front-end objects and builders registered per
type, ``nengo/learning_rules.py`` vs ``nengo/builder/``).

    @register("credit", "feedback_alignment")
    @dataclass(frozen=True)
    class FeedbackAlignment(CreditMethod):
        scale: float = param(1.0, low=0.0, low_open=True, help="std of B relative to W's init")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

from ._validate import ParameterError, _range_text

#: the kinds of registered descriptions
KINDS = ("objective", "credit", "rule", "network", "layer", "circuit", "view")

REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


@dataclass(frozen=True)
class Param:
    """What values a field takes: ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"str"``,
    ``"choice"`` (one of ``choices``), ``"floats"`` / ``"ints"`` / ``"strs"`` (a list, stored as a tuple),
    ``"float_or_floats"`` (one number or a list), ``"any"`` (checked by the owner).
    Numeric bounds ``low`` / ``high`` (open with ``low_open`` / ``high_open``) apply to each number."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    help: str = ""
    nonempty: bool = True

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``a number in (0, 1]``."""
        rng = _range_text(self.low, self.high, not self.low_open, not self.high_open)
        if self.kind == "int":
            return "an integer" + rng
        if self.kind == "float":
            return "a finite number" + rng
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "floats":
            return "a list of finite numbers" + (f" each{rng}" if rng else "")
        if self.kind == "ints":
            return "a list of integers" + (f" each{rng}" if rng else "")
        if self.kind == "float_or_floats":
            return "a finite number" + rng + " or a list of them"
        if self.kind == "strs":
            return "a list of strings"
        return "a value"

    def check(self, owner: str, name: str, value: Any) -> Any:
        """Return ``value`` normalised (int, float, tuple) or raise :class:`ParameterError`."""
        bad = ParameterError(f"{owner}: {name} must be {self.allowed()}, got {value!r}")
        k = self.kind
        if k == "int":
            return self._int(value, bad)
        if k == "float":
            return self._float(value, bad)
        if k == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if k == "str":
            if not isinstance(value, str):
                raise bad
            return value
        if k == "choice":
            if isinstance(value, bool) or value not in self.choices:
                raise bad
            return value
        if k in ("floats", "ints"):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise bad
            vals = tuple(value)
            if self.nonempty and not vals:
                raise bad
            conv = self._int if k == "ints" else self._float
            return tuple(conv(v, bad) for v in vals)
        if k == "strs":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or \
                    not all(isinstance(v, str) and v for v in value):
                raise bad
            return tuple(value)
        if k == "float_or_floats":
            if isinstance(value, (list, tuple)):
                if not value:
                    raise bad
                return tuple(self._float(v, bad) for v in value)
            return self._float(value, bad)
        return value

    def _int(self, v, bad):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise bad
        if (self.low is not None and (v < self.low or (self.low_open and v == self.low))) or (
                self.high is not None and (v > self.high or (self.high_open and v == self.high))):
            raise bad
        return int(v)

    def _float(self, v, bad):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise bad
        v = float(v)
        if (self.low is not None and (v < self.low or (self.low_open and v == self.low))) or (
                self.high is not None and (v > self.high or (self.high_open and v == self.high))):
            raise bad
        return v


def param(default, kind: str | None = None, *, low=None, high=None, low_open=False, high_open=False,
          choices=(), help: str = "", nonempty: bool = True):
    """A dataclass field that is a validated, documented parameter (see :class:`Param`).

    ``kind`` defaults from the default value (bool, int, float, str; a tuple of floats; ``choices``
    given: ``"choice"``)."""
    if kind is None:
        if choices:
            kind = "choice"
        elif isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "int"
        elif isinstance(default, float):
            kind = "float"
        elif isinstance(default, str):
            kind = "str"
        elif isinstance(default, tuple):
            kind = "ints" if default and all(isinstance(x, int) for x in default) else "floats"
        else:
            kind = "any"
    meta = {"param": Param(kind, low, high, low_open, high_open, tuple(choices), help, nonempty)}
    return field(default=default, metadata=meta)


class Description:
    """Base of every frozen, validated description (see module docstring).

    ``__post_init__`` checks and normalises every :func:`param` field, then calls :meth:`validate`
    for checks that involve several fields. Subclasses are ``@dataclass(frozen=True)``.
    """

    registry_kind: ClassVar[str | None] = None
    registry_name: ClassVar[str | None] = None

    def __post_init__(self):
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            p = f.metadata.get("param")
            if p is not None:
                object.__setattr__(self, f.name, p.check(owner, f.name, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Checks across fields (raise :class:`ParameterError` naming them); none by default."""

    @classmethod
    def params(cls) -> dict[str, tuple[Any, Param]]:
        """``name -> (default, Param)`` of the recipe keys this description takes."""
        out = {}
        for f in dataclasses.fields(cls):
            p = f.metadata.get("param")
            if p is not None:
                out[f.name] = (f.default, p)
        return out

    def values(self) -> dict[str, Any]:
        """The parameters' values (tuples as lists): what a recipe section holds."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in ((name, getattr(self, name)) for name in self.params())}

    @classmethod
    def from_values(cls, values: dict, where: str = ""):
        """Make the description from a recipe section's keys; an unknown key is a :class:`ParameterError`
        naming it and listing the allowed ones."""
        allowed = cls.params()
        for key in values:
            if key not in allowed:
                label = f"{cls.registry_name!r} ({cls.__name__})" if cls.registry_name else cls.__name__
                raise ParameterError(
                    f"{where}unknown key {key!r} for {label}; "
                    + (f"its keys are: {', '.join(allowed)}" if allowed else "it takes no keys"))
        return cls(**values)


def register(kind: str, name: str):
    """Class decorator: register a description under ``kind`` (one of :data:`KINDS`) and ``name``.

    Registering another class under a taken name is an error (re-registering the same qualified
    class, e.g. on module reload, replaces it)."""
    if kind not in REGISTRY:
        raise ParameterError(f"register: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(name, str) or not name:
        raise ParameterError(f"register: name must be a non-empty string, got {name!r}")

    def deco(cls):
        old = REGISTRY[kind].get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ParameterError(f"register: {kind} {name!r} is already {old.__module__}.{old.__qualname__}")
        cls.registry_kind, cls.registry_name = kind, name
        REGISTRY[kind][name] = cls
        return cls

    return deco


def lookup(kind: str, name: str) -> type:
    """The class registered as ``kind`` ``name``; the error lists the registered names."""
    _load_builtins()
    table = REGISTRY.get(kind)
    if table is None:
        raise ParameterError(f"lookup: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if name not in table:
        raise ParameterError(f"type must be one of {', '.join(repr(n) for n in sorted(table))} (the registered "
                             f"{kind} types), got {name!r}")
    return table[name]


def registered(kind: str) -> dict[str, type]:
    """Name -> class of every registered description of ``kind``."""
    _load_builtins()
    return dict(REGISTRY[kind])


#: the packages whose every module is imported so that its descriptions register themselves
BUILTIN_PACKAGES = ("circuits", "credit", "networks", "objectives", "plasticity", "data")


def _load_builtins() -> None:
    """Import every module of the library's description packages, so that each registers what it defines
    (a new method is one new file: no list to edit)."""
    import importlib
    import pkgutil

    for pkg_name in BUILTIN_PACKAGES:
        pkg = importlib.import_module(f"{__package__}.{pkg_name}")
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
