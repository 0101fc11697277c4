"""Recipes: one TOML file per experiment, validated key by key, resolved with every default filled.

A recipe has a top level (``name``, ``description``, ``seed``, ``plugins`` and, for a recipe that reproduces a
published number, ``paper = {value, metric, source, baseline}``: ``neurolearn run`` prints ours beside it) and the
sections ``[data]``, ``[network]``, ``[objective]``, ``[credit]``, ``[training]``, ``[eval]``. Nothing here lists keys:
each section is derived from a description (:mod:`neurolearn.describe`) -- ``[data]``, ``[training]``
and ``[eval]`` from :class:`DataConfig`, :class:`~neurolearn.train.TrainingConfig` and
:class:`EvalConfig`; ``[network]``, ``[objective]`` and ``[credit]`` from the registered type their
``type`` key names (``[credit] type = "equilibrium"`` takes the fields of
:class:`~neurolearn.credit.EquilibriumProp`; a type registered in a user's file works the same way).
An unknown key -- including a key the chosen type does not take -- or a bad value raises
:class:`RecipeError` naming the file, the section and the key, and listing what is allowed.
``neurolearn keys`` prints every section's keys with defaults, allowed values and help.
The built-in recipes live in the top-level ``models/`` folder (installed as ``neurolearn.recipes``); the
reproductions of a paper's table in its subfolders (``models/tang2022/``), run by path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._resources import shipped
from ._validate import ParameterError
from .describe import Description, lookup, param, registered

DEFAULT_RECIPE = "digits_bp_1layer"


class RecipeError(ValueError):
    """A recipe is unreadable, has an unknown key or a bad value (the message names which)."""


@dataclass(frozen=True)
class Header(Description):
    """The top level of a recipe."""

    name: str = param("unnamed", help="name of the run (run folders are runs/<name>-<time>)")
    description: str = param("", help="one line on what the recipe reproduces")
    seed: int = param(0, low=0, help="seed of initialisation, batch order and every random draw")
    plugins: tuple = param((), "strs", nonempty=False,
                           help="Python files (relative to the recipe) or modules imported first: they register "
                                "their own objectives, credit methods, rules, layers")
    paper: dict = param(None, "any", help="the published number this recipe reproduces, printed beside ours: "
                                          "{value = 80.20, metric = \"linear_transformed\", source = \"Tang et al. 2022 "
                                          "Table 4\", baseline = 62.66} (metric: a column of the result table; baseline: "
                                          "the paper's number for the untrained row, optional)")

    def validate(self):
        if self.paper is not None:
            object.__setattr__(self, "paper", check_paper(self.paper))


#: metrics a recipe's ``paper`` entry may name (columns of the result table)
PAPER_METRICS = ("linear", "linear_transformed", "direct_av", "direct_max")


def check_paper(paper) -> dict:
    """``paper`` normalised: ``{"value": float in [0, 100], "metric": one of PAPER_METRICS (default "linear"),
    "source": str, "baseline": float in [0, 100] or absent}``; a :class:`ParameterError` naming the bad entry."""
    where = "Header: paper"
    if not isinstance(paper, dict):
        raise ParameterError(f"{where} must be a table such as {{value = 80.20, metric = \"linear_transformed\", "
                             f"source = \"Tang et al. 2022 Table 4\"}}, got {paper!r}")
    unknown = sorted(set(paper) - {"value", "metric", "source", "baseline"})
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {unknown}; allowed: value, metric, source, baseline")
    out = {"value": None, "metric": paper.get("metric", "linear"), "source": paper.get("source", "")}
    for key in ("value", "baseline"):
        v = paper.get(key)
        if v is None and key == "baseline":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ParameterError(f"{where}.{key} must be a percentage in [0, 100], got {v!r}")
        out[key] = float(v)
    if out["metric"] not in PAPER_METRICS:
        raise ParameterError(f"{where}.metric must be one of {', '.join(repr(m) for m in PAPER_METRICS)}, got {out['metric']!r}")
    if not isinstance(out["source"], str):
        raise ParameterError(f"{where}.source must be a string, got {out['source']!r}")
    return out


def load_plugins(plugins, base: Path | None = None) -> tuple[str, ...]:
    """Import each plugin -- a ``.py`` file (relative to ``base``) or a module name -- so that the
    descriptions it registers (:func:`neurolearn.describe.register`) can be named in a recipe. Returns the
    plugins with files as absolute paths (what the resolved recipe records)."""
    import importlib
    import importlib.util
    import sys

    out = []
    for item in plugins:
        if item.endswith(".py"):
            path = Path(item).expanduser()
            if not path.is_absolute() and base is not None and (base / path).exists():
                path = base / path
            path = path.resolve()
            if not path.is_file():
                raise RecipeError(f"plugins: {item!r} is not a file (looked for {path})")
            name = "neurolearn_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception as e:
                    del sys.modules[name]
                    raise RecipeError(f"plugins: importing {path} failed: {type(e).__name__}: {e}") from None
            out.append(str(path))
        else:
            try:
                importlib.import_module(item)
            except ImportError as e:
                raise RecipeError(f"plugins: cannot import module {item!r}: {e}") from None
            out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class DataConfig(Description):
    """``[data]``: where the samples come from and how many are used."""

    source: str = param("digits", help="'digits' (embedded), 'mnist', 'fashion-mnist' (found under "
                                       "$NEUROLEARN_DATA, ~/.neurolearn/data, /usr/share/datasets) or a folder of IDX files")
    train_limit: int = param(0, low=0, help="first N training samples (0: all)")
    test_limit: int = param(0, low=0, help="first N test samples (0: all)")
    test_fraction: float = param(0.25, low=0.0, high=1.0, low_open=True, high_open=True,
                                 help="digits only: fraction held out for testing")
    pretrain_source: str = param("", help="data the network is trained on, when it differs from the evaluation data "
                                          "(e.g. 'fashion-mnist'; its training split, labels only for objectives that "
                                          "need them); '': the training split of source")
    pretrain_limit: int = param(0, low=0, help="first N samples of pretrain_source (0: all)")

    def validate(self):
        if not self.source:
            raise ParameterError("DataConfig: source must be a non-empty string ('digits', 'mnist', 'fashion-mnist' "
                                 "or a folder), got ''")
        if self.pretrain_limit and not self.pretrain_source:
            raise ParameterError("DataConfig: pretrain_limit applies to pretrain_source, which is '' (training on "
                                 "source: use train_limit)")


@dataclass(frozen=True)
class EvalConfig(Description):
    """``[eval]``: what is measured after training."""

    direct_association: bool = param(True, help="direct association accuracy ('av' and 'max')")
    linear: bool = param(True, help="linear classifier on the frozen outputs")
    linear_epochs: int = param(50, low=1, help="epochs of the linear classifier")
    linear_lr: float = param(0.1, low=0.0, low_open=True, help="Adam learning rate of the linear classifier")
    linear_schedule: str = param("exponential", choices=("exponential", "linear", "none"),
                                 help="its learning-rate schedule (none: constant)")
    linear_decay: float = param(0.9, low=0.0, high=1.0, low_open=True, help="exponential decay per epoch")
    linear_dropout: float = param(0.2, low=0.0, high=1.0, high_open=True, help="dropout on the classifier's input")
    linear_batch: int = param(128, low=1, help="mini-batch of the linear classifier")
    probe_population: int = param(-1, low=-1, help="features the classifier reads: -1 the network's output (as the "
                                                   "credit method defines it); l >= 0 population l flattened (0: the "
                                                   "input, l: the output of layer l; E-MNIST3's last conv layer is 3)")
    test_transform: str = param("none", choices=("none", "tang_affine_mnist"),
                                help="also test the classifier on a transformed copy of the test set, made from "
                                     "transform_seed (Tang et al. 2022 Table 4; parameters in transformed_test.json)")
    transform_seed: int = param(0, low=0, help="seed of the transformed test set")
    transform_rotation: float = param(0.375, low=0.0, help="rotation angle ~ U(-rotation, rotation) rad "
                                                           "(neurolearn.data.views.transformed_test_set)")
    transform_log_scale: float = param(0.375, low=0.0, help="isotropic scale exp(s), s ~ U(-log_scale, log_scale)")
    transform_shift: float = param(0.5, low=0.0, help="shift ~ U(-shift, shift) per axis in normalised [-1, 1] coordinates")
    untrained_baseline: bool = param(True, help="evaluate the same network untrained too")
    receptive_fields: int = param(64, low=0, help="cells drawn in receptive_fields.png (0: none)")
    locality: bool = param(True, help="check the locality of the training step")
    spiking: str = param("none", choices=("none", "snntorch", "brian2", "both"), help="run the trained network spiking")
    spiking_steps: int = param(200, low=1, help="time steps of the spiking simulation")


#: top-level keys whose value is a table (not a section)
HEADER_TABLES = ("paper",)

#: the typed sections: section -> (registry kind, default type)
TYPED = {"network": ("network", "mlp"), "objective": ("objective", "self_defined"), "credit": ("credit", "backprop")}


def _fixed_sections() -> dict[str, type]:
    from .train import TrainingConfig

    return {"data": DataConfig, "training": TrainingConfig, "eval": EvalConfig}


def sections() -> list[str]:
    """The section names in the order a recipe file lists them."""
    return ["data", "network", "objective", "credit", "training", "eval"]


def section_class(section: str, values: dict | None = None) -> type:
    """The description class a section's values are checked against (typed sections: by ``type``)."""
    if section in TYPED:
        kind, default = TYPED[section]
        return lookup(kind, (values or {}).get("type", default))
    return _fixed_sections()[section]


def builtin_recipes() -> dict[str, Any]:
    """Name -> resource of every recipe shipped in ``models/``; those in a sub-folder are named
    ``folder/name`` (e.g. ``tang2022/e2e_bp``)."""
    root = shipped("neurolearn.recipes")
    out = {}
    for p in root.iterdir():
        if p.name.endswith(".toml"):
            out[p.name[:-5]] = p
        elif p.is_dir() and not p.name.startswith(("_", ".")):
            out.update({f"{p.name}/{q.name[:-5]}": q for q in p.iterdir() if q.name.endswith(".toml")})
    return out


def find_recipe(name_or_path: str | None) -> tuple[str, str]:
    """Return ``(label, toml text)`` for a path, or the name of a built-in recipe (``None``: default)."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    p = Path(name_or_path)
    if p.is_file():
        try:
            return str(p), p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"recipe {name_or_path!r} cannot be read: {e}") from None
    stem = p.name[:-5] if p.name.endswith(".toml") else p.name
    recipes = builtin_recipes()
    if stem in recipes and (p.parent == Path(".") or p.parent.name == "models"):
        return f"models/{stem}.toml", recipes[stem].read_text()
    sub = f"{p.parent.name}/{stem}"
    if sub in recipes and p.parent.parent in (Path("."), Path("models")):
        return f"models/{sub}.toml", recipes[sub].read_text()
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
    if not raw:
        raise RecipeError(f"{label}: the recipe is empty; give at least its name and the sections that differ from "
                          f"the defaults (`neurolearn keys` lists them)")
    for section, keys in (overrides or {}).items():
        if section and section not in sections():
            raise RecipeError(f"--set: unknown section [{section}]; sections are "
                              + ", ".join(f"[{s}]" for s in sections()))
        target = raw if section == "" else raw.setdefault(section, {})
        if section in TYPED and "type" in keys and keys["type"] != target.get("type"):
            # a new type starts from its own defaults: keep only the overridden keys
            target.clear()
        target.update(keys)
    for key, value in raw.items():
        if isinstance(value, dict) and key not in HEADER_TABLES:
            if key not in sections():
                raise RecipeError(f"{label}: unknown section [{key}]; sections are " + ", ".join(f"[{s}]" for s in sections()))
        elif key not in Header.params():
            raise RecipeError(f"{label}: unknown top-level key {key!r}; allowed: {', '.join(Header.params())} and the "
                              "sections " + ", ".join(f"[{s}]" for s in sections()))
    try:
        header = Header.from_values({k: v for k, v in raw.items() if not isinstance(v, dict) or k in HEADER_TABLES},
                                    "top level: ")
    except ParameterError as e:
        raise RecipeError(f"{label}: {e}") from None
    base = Path(label).parent if Path(label).is_file() else None
    header = Header(**{**header.values(), "plugins": load_plugins(header.plugins, base)})
    out: dict = header.values()
    for section in sections():
        given = dict(raw.get(section, {}))
        circuits = given.pop("circuits", None)
        if circuits is not None:
            given = _with_circuits(given, circuits, section, label)
        cls = None
        try:
            cls = section_class(section, given)
            obj = cls.from_values({k: v for k, v in given.items() if k != "type"}, f"[{section}] ")
        except ParameterError as e:
            msg = str(e)
            if cls is not None:
                msg = msg.removeprefix(f"{cls.__name__}: ")
            raise RecipeError(f"{label}: {msg if msg.startswith('[') else f'[{section}] {msg}'}") from None
        values = obj.values()
        if circuits is not None:
            values = {"circuits": list(circuits)} | values
        out[section] = ({"type": cls.registry_name} | values) if section in TYPED else values
    return out


def _with_circuits(given: dict, circuits, section: str, label: str) -> dict:
    """``given`` with the keys of the named circuit parameter sets (``circuits/<name>.toml``, or a path to
    a TOML file) filled in where the section does not set them itself (the section's own keys win).

    Only a set's top-level keys are filled. A sub-table (e.g. ``[spiking]`` of ``circuits/hinge_error.toml``:
    the Brian2 realisation's constants) belongs to another realisation of the circuit and is skipped, unless
    the section's type takes a key of that name. Every top-level key must be a key of the section's type
    (an error naming the keys otherwise), and the section's own keys are checked by the type as always, so a
    misspelt key, in the set or in the section, is refused."""
    from .circuits import circuit_params

    if isinstance(circuits, str) or not isinstance(circuits, list) or not all(isinstance(c, str) for c in circuits):
        raise RecipeError(f"{label}: [{section}] circuits must be a list of circuit parameter set names "
                          f"(e.g. [\"kwta\", \"homeostasis\"]), got {circuits!r}")
    out = dict(given)
    for name in circuits:
        try:
            if name.endswith(".toml"):
                path = Path(name) if Path(name).is_absolute() or not Path(label).is_file() else Path(label).parent / name
                params = tomllib.loads(path.read_text())
            else:
                params = circuit_params(name)
        except (OSError, ValueError) as e:
            raise RecipeError(f"{label}: [{section}] circuits: {e}") from None
        try:
            cls = section_class(section, given)
            takes = cls.params()
        except ParameterError:
            cls, takes = None, None
        params = {k: v for k, v in params.items() if not isinstance(v, dict) or (takes is not None and k in takes)}
        for key, value in params.items():
            out.setdefault(key, value)
        where = f"circuit parameter set {name!r}"
        unknown = [] if takes is None else [k for k in params if k not in takes]
        if unknown:
            raise RecipeError(f"{label}: [{section}] circuits: {where} sets {unknown}, which type "
                              f"{cls.registry_name!r} does not take; "
                              + (f"its keys are: {', '.join(cls.params())}" if cls.params() else "it takes no keys"))
    return out


def describe_recipe(recipe: dict) -> dict:
    """The description objects of a resolved recipe: ``{"data", "network", "objective", "credit",
    "training", "eval"}`` (frozen and validated)."""
    parts = {}
    for section in sections():
        values = dict(recipe[section])
        cls = section_class(section, values)
        values.pop("type", None)
        values.pop("circuits", None)  # already filled in by resolve
        parts[section] = cls.from_values(values)
    return parts


def dumps(recipe: dict) -> str:
    """Write a resolved recipe back as TOML (top-level keys, then one table per section)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {fmt(v)}" for k, v in recipe.items()
             if (not isinstance(v, dict) or k in HEADER_TABLES) and v is not None]
    for section, keys in recipe.items():
        if isinstance(keys, dict) and section not in HEADER_TABLES:
            lines += ["", f"[{section}]"] + [f"{k} = {fmt(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def keys_text(section: str | None = None) -> str:
    """Every section's keys (typed sections: per registered type) with defaults, allowed values and help."""

    def rows(cls):
        out = []
        for name, (default, p) in cls.params().items():
            d = list(default) if isinstance(default, tuple) else default
            out.append(f"    {name:<20} = {d!r:<14} {p.allowed()}" + (f"; {p.help}" if p.help else ""))
        return out

    lines = ["top level:"] + rows(Header)
    for s in sections():
        if section and s != section:
            continue
        if s in TYPED:
            kind, default = TYPED[s]
            for name, cls in sorted(registered(kind).items()):
                mark = " (default)" if name == default else ""
                doc = (cls.__doc__ or "").strip().split("\n")[0]
                lines += ["", f"[{s}] type = {name!r}{mark}: {doc}"] + rows(cls)
        else:
            lines += ["", f"[{s}]"] + rows(_fixed_sections()[s])
    return "\n".join(lines)


def build(recipe: dict, input_shape):
    """Objects of a resolved recipe: ``(network, objective, credit)``; ``input_shape`` is one sample's
    shape (or its number of features)."""
    parts = describe_recipe(recipe)
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    try:
        net = parts["network"].build(shape, seed=recipe["seed"])
    except ParameterError as e:
        raise RecipeError(f"recipe {recipe['name']!r}: [network] {e}") from None
    return net, parts["objective"], parts["credit"]
