"""The catalogue of locality checks run by ``neurolearn check-locality``: each module registers its own.

An entry is a factory ``sizes -> Checkable`` (Hypothesis draws the sizes), the number of populations it
takes, the verdict the design expects (DESIGN.md section 4; METHODS.md section 8) and the violation kinds
that must be named when it is non-local. A credit method, objective or circuit registers its checks in the
file that defines it (:func:`register_check`); :func:`catalog` imports every built-in module first, so
adding a method never touches this file or the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .._validate import ParameterError


@dataclass(frozen=True)
class CatalogEntry:
    """One row of ``check-locality``: ``factory(sizes) -> Checkable`` on ``n_populations`` populations,
    expected verdict ``expected_local`` and the kinds ``expected_kinds`` a non-local verdict must name."""

    factory: Callable
    n_populations: int
    expected_local: bool
    expected_kinds: frozenset = field(default_factory=frozenset)
    label: str = ""

    def as_tuple(self) -> tuple:
        """``(factory, n_populations, expected_local, expected_kinds)`` (the form of ``builtin_checks``)."""
        return (self.factory, self.n_populations, self.expected_local, set(self.expected_kinds))


_CATALOG: list[CatalogEntry] = []


def register_check(factory: Callable, n_populations: int, expected_local: bool, expected_kinds=(),
                   label: str = "") -> CatalogEntry:
    """Add a check to the catalogue (call at import of the module that defines the method)."""
    if not callable(factory):
        raise ParameterError(f"register_check: factory must be callable (sizes -> Checkable), got {factory!r}")
    if not isinstance(n_populations, int) or n_populations < 1:
        raise ParameterError(f"register_check: n_populations must be an integer >= 1, got {n_populations!r}")
    if expected_local and expected_kinds:
        raise ParameterError("register_check: expected_kinds must be empty when expected_local is True")
    entry = CatalogEntry(factory, n_populations, bool(expected_local), frozenset(expected_kinds), label)
    _CATALOG.append(entry)
    return entry


def catalog() -> list[CatalogEntry]:
    """Every registered check, after importing the library's built-in modules."""
    from ..describe import _load_builtins

    _load_builtins()
    return list(_CATALOG)
