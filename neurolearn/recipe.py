"""Recipes: one TOML file per experiment, validated key by key, resolved with every default filled.

A recipe has a top level (``name``, ``description``, ``seed``) and the sections ``[data]``,
``[network]``, ``[objective]``, ``[credit]``, ``[training]``, ``[eval]``. Every key is declared in
:data:`SCHEMA` with its default and its check; an unknown key or a bad value raises
:class:`RecipeError` naming the file, the section and the key, and listing what is allowed.
The built-in recipes live in the top-level ``models/`` folder (installed as ``neurolearn.recipes``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

from ._resources import shipped
from ._validate import ParameterError

DEFAULT_RECIPE = "digits_bp_1layer"


class RecipeError(ValueError):
    """A recipe is unreadable, has an unknown key or a bad value (the message names which)."""


def _int(lo=None):
    def f(v):
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            return f"an integer{'' if lo is None else f' >= {lo}'}"
    return f


def _num(lo=None, hi=None, lo_open=False):
    def f(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "a number"
        if lo is not None and (v < lo or (lo_open and v == lo)) or hi is not None and v > hi:
            return f"a number in {'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
    return f


def _choice(*opts):
    def f(v):
        if v not in opts:
            return "one of " + ", ".join(repr(o) for o in opts)
    return f


def _bool(v):
    if not isinstance(v, bool):
        return "true or false"


def _str(v):
    if not isinstance(v, str):
        return "a string"


def _device(v):
    """A torch device this machine has: 'cpu', or 'cuda' / 'cuda:N' / 'mps' when available."""
    import torch

    try:
        dev = torch.device(v)
    except (RuntimeError, TypeError):
        return "a torch device such as 'cpu', 'cuda' or 'cuda:0'"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "'cpu' on this machine (torch sees no CUDA device)"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "'cpu' on this machine (torch sees no MPS device)"


def _num_or_list(lo=0.0):
    def f(v):
        vals = v if isinstance(v, list) else [v]
        if not vals or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < lo for x in vals):
            return f"a number >= {lo} or a list of them (one per layer)"
    return f


def _sizes(v):
    if not isinstance(v, list) or len(v) < 1 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
        return "a list of positive integers: the cells of each population after the input (the input size comes from the data)"


def _probs(v):
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < 1 for x in v):
        return "a list of probabilities in [0, 1), one per population (input, hidden..., output)"


# section -> key -> (default, check)
SCHEMA: dict[str, dict[str, tuple[Any, Callable]]] = {
    "": {"name": ("unnamed", _str), "description": ("", _str), "seed": (0, _int(0))},
    "data": {
        "source": ("digits", _str),
        "train_limit": (0, _int(0)),
        "test_limit": (0, _int(0)),
        "test_fraction": (0.25, _num(0.0, 1.0, lo_open=True)),
    },
    "network": {
        "sizes": ([2000], _sizes),
        "hidden_activation": ("relu", _choice("relu", "hardsigmoid", "sigmoid", "identity")),
        "output_activation": ("hardsigmoid", _choice("relu", "hardsigmoid", "sigmoid", "identity")),
        "dropout": ([0.3, 0.2], _probs),
        "init_gain": (0.5, _num(0.0, lo_open=True)),
    },
    "objective": {
        "type": ("self_defined", _choice("self_defined", "supervised")),
        "k": (6, _int(1)),
        "gamma": (0.4, _num(0.0)),
        "mode": ("batch", _choice("batch", "sequential")),
        "eta": (0.6, _num(0.0, 1.0, lo_open=True)),
        "reset_each_epoch": (True, _bool),
        "smoothing": (0.0, _num(0.0, 0.999)),
        "dropout_target": ("multiply", _choice("multiply", "divide", "none")),
    },
    "credit": {
        "type": ("backprop", _choice("backprop", "equilibrium")),
        "beta": (0.2, _num(0.0, lo_open=True)),
        "free_steps": (40, _int(1)),
        "nudged_steps": (10, _int(1)),
        "dt": (0.2, _num(0.0, 1.0, lo_open=True)),
        "beta_sign": ("random", _choice("positive", "random", "symmetric")),
        "tol": (0.0, _num(0.0)),
        "exact_single_layer": (True, _bool),
        "free_solver": ("euler", _choice("euler", "alternating")),
        "nudged_solver": ("euler", _choice("euler", "alternating")),
        "solver_tol": (1e-4, _num(0.0, lo_open=True)),
    },
    "training": {
        "epochs": (10, _int(0)),
        "batch_size": (16, _int(1)),
        "optimizer": ("sgd", _choice("sgd", "adam")),
        "lr": (8.0, _num_or_list(0.0)),
        "schedule": ("linear", _choice("linear", "none")),
        "block": (8, _int(1)),
        "final_lr_factor": (5e-4, _num(0.0, 1.0)),
        "threads": (0, _int(0)),
        "device": ("cpu", _device),
    },
    "eval": {
        "direct_association": (True, _bool),
        "linear": (True, _bool),
        "linear_epochs": (50, _int(1)),
        "linear_lr": (0.1, _num(0.0, lo_open=True)),
        "linear_schedule": ("exponential", _choice("exponential", "linear")),
        "linear_decay": (0.9, _num(0.0, 1.0, lo_open=True)),
        "linear_dropout": (0.2, _num(0.0, 0.999)),
        "untrained_baseline": (True, _bool),
        "receptive_fields": (64, _int(0)),
        "locality": (True, _bool),
        "spiking": ("none", _choice("none", "snntorch", "brian2", "both")),
        "spiking_steps": (200, _int(1)),
    },
}


def builtin_recipes() -> dict[str, Any]:
    """Name -> resource of every recipe shipped in ``models/``."""
    root = shipped("neurolearn.recipes")
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def find_recipe(name_or_path: str | None) -> tuple[str, str]:
    """Return ``(label, toml text)`` for a path, or the name of a built-in recipe (``None``: default)."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    p = Path(name_or_path)
    if p.is_file():
        return str(p), p.read_text()
    stem = p.name[:-5] if p.name.endswith(".toml") else p.name
    recipes = builtin_recipes()
    if stem in recipes and (p.parent == Path(".") or p.parent.name == "models"):
        return f"models/{stem}.toml", recipes[stem].read_text()
    raise RecipeError(
        f"recipe {name_or_path!r} not found: give a path to a .toml file or one of the built-in recipes: "
        + ", ".join(sorted(recipes))
    )


def parse_overrides(items: list[str]) -> dict:
    """``["section.key=value", ...]`` -> ``{section: {key: value}}``; ``value`` is read as TOML
    (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"text"``) and, if that fails, taken as a bare string."""
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().rpartition(".")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. training.epochs=5")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()
        out.setdefault(section if dot else "", {})[key] = parsed
    return out


def resolve(text: str, label: str = "<recipe>", overrides: dict | None = None) -> dict:
    """Parse TOML ``text`` and return the full recipe (every default filled), validated."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{label}: not valid TOML: {e}") from None
    for section, keys in (overrides or {}).items():
        target = raw if section == "" else raw.setdefault(section, {})
        target.update(keys)
    out: dict = {}
    sections = [s for s in SCHEMA if s]
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in SCHEMA or key == "":
                raise RecipeError(f"{label}: unknown section [{key}]; sections are " + ", ".join(f"[{s}]" for s in sections))
        elif key not in SCHEMA[""]:
            raise RecipeError(
                f"{label}: unknown top-level key {key!r}; allowed: {', '.join(SCHEMA[''])} and the sections "
                + ", ".join(f"[{s}]" for s in sections)
            )
    for section, keys in SCHEMA.items():
        given = raw if section == "" else raw.get(section, {})
        resolved = {}
        for key, value in given.items():
            if section == "" and isinstance(value, dict):
                continue
            if key not in keys:
                where = f"[{section}] " if section else ""
                raise RecipeError(f"{label}: unknown key {where}{key!r}; allowed keys: {', '.join(keys)}")
            problem = keys[key][1](value)
            if problem:
                where = f"[{section}] " if section else ""
                raise RecipeError(f"{label}: {where}{key} must be {problem}, got {value!r}")
            resolved[key] = value
        for key, (default, _) in keys.items():
            resolved.setdefault(key, default)
        if section == "":
            out.update(resolved)
        else:
            out[section] = resolved
    net = out["network"]
    if len(net["dropout"]) != len(net["sizes"]) + 1:
        raise RecipeError(
            f"{label}: [network] dropout must have {len(net['sizes']) + 1} entries (input, hidden..., output) "
            f"for sizes {net['sizes']}, got {net['dropout']}"
        )
    lr = out["training"]["lr"]
    if isinstance(lr, list) and len(lr) not in (1, len(net["sizes"])):
        raise RecipeError(
            f"{label}: [training] lr must be one number or one per layer ({len(net['sizes'])}), got {lr}"
        )
    return out


def dumps(recipe: dict) -> str:
    """Write a resolved recipe back as TOML (top-level keys, then one table per section)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {fmt(v)}" for k, v in recipe.items() if not isinstance(v, dict)]
    for section, keys in recipe.items():
        if isinstance(keys, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {fmt(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def build(recipe: dict, n_inputs: int):
    """Objects of a resolved recipe: ``(network, objective, credit)``."""
    from .credit import Backprop, EquilibriumProp
    from .networks import MLP
    from .objectives import SelfDefinedTarget, SupervisedTarget

    net_cfg, obj_cfg, cr_cfg = recipe["network"], recipe["objective"], recipe["credit"]
    try:
        net = MLP(
            [n_inputs] + list(net_cfg["sizes"]),
            hidden_activation=net_cfg["hidden_activation"],
            output_activation=net_cfg["output_activation"],
            dropout=net_cfg["dropout"],
            init_gain=net_cfg["init_gain"],
            seed=recipe["seed"],
        )
        if obj_cfg["type"] == "self_defined":
            objective = SelfDefinedTarget(**{k: v for k, v in obj_cfg.items() if k != "type"})
        else:
            objective = SupervisedTarget(smoothing=obj_cfg["smoothing"])
        if cr_cfg["type"] == "backprop":
            credit = Backprop()
        else:
            credit = EquilibriumProp(**{k: v for k, v in cr_cfg.items() if k != "type"})
    except ParameterError as e:
        raise RecipeError(f"recipe {recipe['name']!r}: {e}") from None
    return net, objective, credit
