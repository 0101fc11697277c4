"""Micro-circuits with a rate (torch) realisation; parameter sets in the top-level ``circuits/`` folder."""

import tomllib

from .._resources import shipped
from .homeostasis import Homeostasis, homeostasis_checkable
from .kwta import KWTA, kwta

__all__ = ["KWTA", "kwta", "Homeostasis", "homeostasis_checkable", "circuit_params"]


def circuit_params(name: str) -> dict:
    """The default parameter set ``circuits/<name>.toml`` (e.g. ``"kwta"``, ``"homeostasis"``) as a dict."""
    root = shipped("neurolearn.circuit_params")
    names = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))
    if name not in names:
        raise ValueError(f"circuit_params: name must be one of {names}, got {name!r}")
    return tomllib.loads((root / f"{name}.toml").read_text())
