"""Rules written once: one Brian2-style description gives the torch update, the Brian2 ``Synapses`` and the contract.

A local plasticity rule is described once (:class:`RuleEquations`) in Brian2's synaptic syntax with
units: the synapse's own weight ``w``, event-driven traces, the statements run at each presynaptic
spike (``on_pre``) and each postsynaptic spike (``on_post``), declared signals (delivered to the post
cell by a named pathway), declared global scalars, and parameters (the namespace, Brian2 quantities).
:meth:`RuleEquations.compile` checks the units and the names and derives

(a) the torch update, the rule's *rate limit*: pre cell ``j`` fires Poisson spikes at rate
    ``pre_j * rate_max``, post cell ``i`` at ``post_i * rate_max`` (or at the rate of a declared signal,
    ``post_events``), independently. A fast trace ``dA/dt = -A / tau`` raised by ``A += a_pre`` at pre
    and ``A += a_post`` at post spikes has the stationary mean ``<A> = tau rate_max (a_pre pre + a_post post)``
    (Campbell's theorem; Kempter, Gerstner & van Hemmen 1999 for the drift of spike-timing rules), and
    a Poisson spike sees the trace's stationary value just before it. Over a window of ``1 / rate_max``
    (one expected spike of a cell of activity 1) the expected weight change is

        dw = pre * Dw_pre(<A>) + post * Dw_post(<A>)

    where ``Dw_pre`` / ``Dw_post`` execute the ``on_pre`` / ``on_post`` statements in order on the
    mean traces (statements after ``A += a`` see ``<A> + a``). This is exact to first order in the
    learning rate when every ``Dw`` is linear in each fast trace (checked; a product of a pre trace and
    a post trace is fine: the trains are independent). *Slow* traces (``slow=``, time constant much
    longer than the window: BCM's sliding threshold) are inputs of the torch update, one value per
    cell and sample, with their own drift ``dA = T f(A) + pre DA_pre + post DA_post``
    (:meth:`CompiledRule.torch_traces`). The batch is a sum of per-sample updates.
(b) the Brian2 ``Synapses`` strings: ``model`` (``w``, the traces, ``name : 1 (shared)`` per global
    scalar), ``on_pre``, ``on_post`` (a signal ``s`` read as ``s_post``; assignments to ``w`` wrapped in
    ``clip(..., low, high)`` when ``bounds`` are declared) and their ``namespace``.
(c) the locality contract, from the names the rate limit reads: ``pre`` -> ``"pre"``, ``post`` ->
    ``"post"``, ``w`` (read by the rate limit, by a statement or by the clip to the bounds) -> ``"weight"``,
    any trace -> ``"trace"``, a signal -> ``"neuron_signal"`` (its
    pathway declared), a global scalar -> ``"global_scalar"``; batch ``"samples"``.

Anything else a description names is rejected with an error naming it: another group's variable
(``v_post``, ``x_pre`` when not a parameter of the namespace), a summed variable (``(summed)``: the sum
over other synapses' weights), Brian2's indices and counts (``i``, ``j``, ``N_incoming`` ...), a write
to anything but ``w`` and the traces, and any name that is neither ``w``, a trace, a declared signal or
scalar nor a parameter of the namespace (Brian2 would read it from the post group). Signals, scalars
and traces may not be called ``e``, ``pi`` or ``inf`` (Brian2's constants). Units are checked per equation and
statement before anything else; an error names the equation and, where a time unit is missing or extra,
the parameter (``tau_pre has units 1 (dimensionless) where s fits``).

Supported Brian2 syntax (limits): ``w : <unit>`` (no other synaptic parameter, no subexpression, no
continuous ``dw/dt``); traces ``dA/dt = k A : <unit> (event-driven)`` with ``k`` built from parameters
(linear decay); a slow trace reads its own cell's side only (pre, or post / signals) plus scalars;
statements ``x = / += / -= / *= / /= expr`` on ``w`` and traces, a fast trace changed
only by ``+=`` / ``-=`` of a constant (all-to-all pairing, Morrison et al. 2008); functions ``exp``,
``log``, ``sqrt``, ``abs``, ``clip``, ``tanh``, ``sign``. Hard weight bounds live in ``bounds`` and apply to
the Brian2 statements and :meth:`CompiledRule.bound`; the torch update is the drift inside the bounds.
The rate limit assumes independent pre and post trains: where the post spikes are caused by the pre
spikes (a driven circuit), spike-timing correlations add terms it does not contain.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import sympy
import torch

from .._validate import ParameterError
from ..locality.contract import Cells, Checkable, Contract, Layer, Scalar, Signal, StateSpec, Trace, Weight

__all__ = ["RuleEquations", "CompiledRule", "RuleError", "EquationRule"]

#: functions a description may call (Brian2 names), mapped to torch
FUNCTIONS = {"exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs, "Abs": torch.abs,
             "tanh": torch.tanh, "sign": torch.sign, "clip": None}
#: Brian2 names a synapse could read that are not its own: indices, counts, time, noise
RESERVED = ("i", "j", "t", "dt", "N", "N_incoming", "N_outgoing", "lastspike", "not_refractory", "xi", "rand",
            "randn", "t_in_timesteps", "delay")
_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(\+=|-=|\*=|/=|=)\s*(.+?)\s*$")


class RuleError(ParameterError):
    """A rule description is unusable: a unit mismatch, a non-local name, unsupported syntax (the message names it)."""


def _sym(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, real=True)


def _to_sympy(where: str, code: str) -> sympy.Expr:
    from brian2.parsing.sympytools import str_to_sympy

    try:
        return str_to_sympy(code)
    except Exception as e:  # brian2's parser: SyntaxError, ValueError ...
        raise RuleError(f"{where}: cannot parse {code!r}: {e}") from e


def _names(expr: sympy.Expr) -> set:
    return {s.name for s in expr.free_symbols}


def _replace(expr: sympy.Expr, values: Mapping[str, sympy.Expr]) -> sympy.Expr:
    return expr.xreplace({s: values[s.name] for s in expr.free_symbols if s.name in values})


def _function_names(expr: sympy.Expr) -> set:
    return {type(f).__name__ for f in expr.atoms(sympy.Function)}


def _split_statements(code: str) -> list:
    lines = []
    for raw in code.replace(";", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


# ----------------------------------------------------------------------------- units
def _dims(expr: sympy.Expr, dims: Mapping[str, object], where: str):
    """Brian2 dimensions of ``expr`` given each name's; raises ``DimensionMismatchError`` on a mismatch."""
    from brian2.units.fundamentalunits import DIMENSIONLESS, DimensionMismatchError

    if isinstance(expr, sympy.Symbol):
        return dims[expr.name]
    if isinstance(expr, sympy.Number) or expr.is_number:
        return DIMENSIONLESS
    if isinstance(expr, sympy.Add):
        parts = [_dims(a, dims, where) for a in expr.args]
        for p in parts[1:]:
            if p != parts[0]:
                raise DimensionMismatchError(f"terms of {expr} have units {_unit(parts[0])} and {_unit(p)}")
        return parts[0]
    if isinstance(expr, sympy.Mul):
        out = DIMENSIONLESS
        for a in expr.args:
            out = out * _dims(a, dims, where)
        return out
    if isinstance(expr, sympy.Pow):
        base = _dims(expr.args[0], dims, where)
        if _dims(expr.args[1], dims, where) != DIMENSIONLESS:
            raise DimensionMismatchError(f"the exponent of {expr} must be dimensionless")
        if base == DIMENSIONLESS:
            return base
        if not expr.args[1].is_number:
            raise DimensionMismatchError(f"{expr}: a quantity with units {_unit(base)} to a symbolic power")
        return base ** float(expr.args[1])
    name = type(expr).__name__
    if name == "clip":
        parts = [_dims(a, dims, where) for a in expr.args]
        if any(p != parts[0] for p in parts[1:]):
            raise DimensionMismatchError(f"clip{expr.args}: value and bounds have units {[_unit(p) for p in parts]}")
        return parts[0]
    if name in ("Abs", "abs"):
        return _dims(expr.args[0], dims, where)
    if name == "sqrt":
        return _dims(expr.args[0], dims, where) ** 0.5
    if name == "sign":
        _dims(expr.args[0], dims, where)
        return DIMENSIONLESS
    if name in FUNCTIONS:
        inner = _dims(expr.args[0], dims, where)
        if inner != DIMENSIONLESS:
            raise DimensionMismatchError(f"{name}() of a quantity with units {_unit(inner)}")
        return DIMENSIONLESS
    raise RuleError(f"{where}: function {name!r} is not supported; use one of {sorted(set(FUNCTIONS) - {'Abs'})}")


def _unit(dim) -> str:
    from brian2.units.fundamentalunits import DIMENSIONLESS, get_unit

    return "1 (dimensionless)" if dim == DIMENSIONLESS else str(get_unit(dim))


# ----------------------------------------------------------------------------- the description
@dataclass(frozen=True)
class RuleEquations:
    """One local rule in Brian2's synaptic syntax (see the module docstring for what is derived).

    ``model``: ``w : <unit>`` and the traces ``dA/dt = -A / tau : <unit> (event-driven)``;
    ``on_pre`` / ``on_post``: statements at each pre / post spike; ``signals``: ``name -> pathway`` of
    signals delivered to the post cell (Brian2: the post group's variable ``name``); ``scalars``: names of
    global scalars (Brian2: a shared synaptic variable); ``slow``: traces kept as state (inputs of the
    torch update); ``bounds``: ``(low, high)`` expressions for hard weight bounds or ``None``;
    ``post_events``: ``"post"`` (on_post runs at the post cell's rate) or the name of a signal whose
    value is the post event count (a winner signal); ``rate``: the parameter holding the rate of
    activity 1 (Hz); ``reference``: the paper.
    """

    name: str
    model: str
    on_pre: str = ""
    on_post: str = ""
    signals: Mapping[str, str] = field(default_factory=dict)
    scalars: tuple = ()
    slow: tuple = ()
    bounds: tuple | None = None
    post_events: str = "post"
    rate: str = "rate_max"
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "signals", dict(self.signals))
        object.__setattr__(self, "scalars", tuple(self.scalars))
        object.__setattr__(self, "slow", tuple(self.slow))
        if self.bounds is not None:
            if not (isinstance(self.bounds, (tuple, list)) and len(self.bounds) == 2):
                raise RuleError(f"{self.name}: bounds must be (low, high) expressions or None, got {self.bounds!r}")
            object.__setattr__(self, "bounds", tuple(str(b) for b in self.bounds))
        for attr in ("model", "on_pre", "on_post"):
            if not isinstance(getattr(self, attr), str):
                raise RuleError(f"{self.name}: {attr} must be a string of Brian2 code, got {type(getattr(self, attr)).__name__}")
        self._parsed()  # fail early on syntax and names

    def __hash__(self):
        return hash((self.name, self.model, self.on_pre, self.on_post, tuple(sorted(self.signals.items())),
                     self.scalars, self.slow, self.bounds, self.post_events, self.rate))

    # ------------------------------------------------------------------ parsing
    def _parsed(self) -> "_Parsed":
        return _parse(self)

    @property
    def traces(self) -> tuple:
        """The names of the traces (fast and slow)."""
        return tuple(self._parsed().traces)

    def compile(self, namespace: Mapping[str, object]) -> "CompiledRule":
        """Check units and names against ``namespace`` (parameter -> Brian2 quantity or number) and derive
        the torch update, the Brian2 strings and the contract (:class:`CompiledRule`)."""
        return _compile(self, _freeze_namespace(self.name, namespace))


def _freeze_namespace(where: str, namespace) -> tuple:
    from brian2.units.fundamentalunits import Quantity, get_dimensions

    if not isinstance(namespace, Mapping):
        raise RuleError(f"{where}: namespace must be a mapping name -> quantity, got {type(namespace).__name__}")
    out = []
    for k, v in namespace.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, Quantity)):
            raise RuleError(f"{where}: parameter {k!r} must be a number or a Brian2 quantity, got {v!r}")
        out.append((k, _magnitude(v), get_dimensions(v)))
    return tuple(sorted(out, key=lambda t: t[0]))


def _magnitude(q) -> float:
    import numpy as np

    return float(np.asarray(q))


@dataclass
class _Parsed:
    w_dim: object
    traces: dict  # name -> (dim, decay coefficient k as sympy, equation text)
    pre: list  # (var, op, sympy expr, text)
    post: list
    names: set  # identifiers read anywhere
    bounds: tuple | None


@functools.lru_cache(maxsize=256)
def _parse(eqs: RuleEquations) -> _Parsed:
    from brian2 import Equations
    from brian2.equations.equations import DIFFERENTIAL_EQUATION, PARAMETER, SUBEXPRESSION

    where = eqs.name
    try:
        model = Equations(eqs.model)
    except Exception as e:
        raise RuleError(f"{where}: model is not valid Brian2 equations: {e}") from e
    if "w" not in model:
        raise RuleError(f"{where}: model must declare the synapse's weight as 'w : 1' (a rule changes its own weight)")
    traces, w_dim = {}, None
    for name, eq in model.items():
        if "summed" in eq.flags:
            raise RuleError(f"{where}: {name!r} is a summed variable: it sums over other synapses (their weights "
                            "or activities) -- not local to one synapse")
        if name == "w":
            if eq.type != PARAMETER or eq.flags:
                raise RuleError(f"{where}: 'w' must be a plain parameter 'w : <unit>' (no dw/dt, no flags), got {eq}")
            w_dim = eq.dim
            continue
        if eq.type == SUBEXPRESSION:
            raise RuleError(f"{where}: subexpression {name!r} is not supported; write it out in the statements")
        if eq.type == PARAMETER:
            raise RuleError(f"{where}: synaptic parameter {name!r} is not supported: a rule's state is w and its "
                            "traces; constants belong in the namespace")
        if eq.type == DIFFERENTIAL_EQUATION:
            if list(eq.flags) != ["event-driven"]:
                raise RuleError(f"{where}: trace {name!r} must be flagged (event-driven), got flags {list(eq.flags)}")
            rhs = _to_sympy(f"{where}: d{name}/dt", eq.expr.code)
            k = sympy.simplify(rhs / _sym(name))
            if name in _names(k) or "w" in _names(k):
                raise RuleError(f"{where}: trace {name!r} must decay linearly, d{name}/dt = -{name}/tau; got {eq.expr.code}")
            traces[name] = (eq.dim, k, f"d{name}/dt = {eq.expr.code}")
    statements = {}
    for path in ("on_pre", "on_post"):
        out = []
        for line in _split_statements(getattr(eqs, path)):
            m = _STATEMENT.match(line)
            if not m:
                raise RuleError(f"{where}: {path}: {line!r} is not a statement 'var = expr' (or +=, -=, *=, /=)")
            var, op, code = m.groups()
            if var != "w" and var not in traces:
                raise RuleError(f"{where}: {path}: {line!r} writes {var!r}; a rule writes only its weight w and its "
                                f"traces {sorted(traces)}")
            out.append((var, op, _to_sympy(f"{where}: {path}: {line!r}", code), line, code))
        statements[path] = out
    bounds = None
    if eqs.bounds is not None:
        bounds = tuple(_to_sympy(f"{where}: bounds", b) for b in eqs.bounds)
    names = set()
    for _, _, e, _, _ in statements["on_pre"] + statements["on_post"]:
        names |= _names(e)
    for _, k, _ in traces.values():
        names |= _names(k)
    for b in bounds or ():
        names |= _names(b)
    for n in sorted(names):
        if n in RESERVED:
            raise RuleError(f"{where}: names {n!r}, Brian2's {n!r} (an index, count, time or noise): a local rule "
                            "reads its own synapse, its two cells and declared signals only")
    for s in list(eqs.signals) + list(eqs.scalars) + list(traces):
        if s in ("e", "pi", "inf") or not re.fullmatch(r"[A-Za-z_]\w*", s):
            raise RuleError(f"{where}: {s!r} cannot name a signal, scalar or trace (Brian2 reads e, pi, inf as "
                            "constants; names are identifiers)")
    for s in list(eqs.signals) + list(eqs.scalars) + list(eqs.slow):
        if s in ("w", "pre", "post") or (s in traces and s not in eqs.slow):
            raise RuleError(f"{where}: signal or scalar {s!r} clashes with w, pre, post or a trace")
    for s in eqs.slow:
        if s not in traces:
            raise RuleError(f"{where}: slow trace {s!r} is not a trace of the model; traces are {sorted(traces)}")
    if eqs.post_events != "post" and eqs.post_events not in eqs.signals:
        raise RuleError(f"{where}: post_events must be 'post' or a declared signal {sorted(eqs.signals)}, got {eqs.post_events!r}")
    return _Parsed(w_dim, traces, statements["on_pre"], statements["on_post"], names, bounds)


# ----------------------------------------------------------------------------- compiling
def _apply(op: str, cur, val):
    return {"=": val, "+=": cur + val, "-=": cur - val, "*=": cur * val, "/=": cur / val}[op]


def _execute(statements, env: dict) -> dict:
    env = dict(env)
    for var, op, expr, _, _ in statements:
        env[var] = _apply(op, env[var], _replace(expr, env))
    return env


def _check_units(eqs: RuleEquations, p: _Parsed, dims: dict) -> None:
    """Check every equation and statement; name the parameter when a time unit would fix it."""
    from brian2 import second
    from brian2.units.fundamentalunits import DIMENSIONLESS, DimensionMismatchError, get_dimensions

    sec = get_dimensions(second)
    checks = []  # (text, sympy expr, expected dims)
    for name, (dim, k, text) in p.traces.items():
        checks.append((text, k * _sym(name), dim / sec))
    for path, stmts in (("on_pre", p.pre), ("on_post", p.post)):
        for var, op, expr, line, _ in stmts:
            target = dims[var]
            checks.append((f"{path}: {line}", expr, DIMENSIONLESS if op in ("*=", "/=") else target))
    for b, code in zip(p.bounds or (), eqs.bounds or ()):
        checks.append((f"bounds: {code}", b, p.w_dim))
    if eqs.rate not in dims or dims[eqs.rate] != sec ** -1:
        got = _unit(dims[eqs.rate]) if eqs.rate in dims else "missing"
        raise RuleError(f"{eqs.name}: units: parameter {eqs.rate!r} (the rate of activity 1) must be in Hz, got {got}")
    for text, expr, expected in checks:
        try:
            got = _dims(expr, dims, f"{eqs.name}: {text}")
            ok = got == expected
        except DimensionMismatchError as e:
            ok, got = False, None
            detail = str(e)
        if ok:
            continue
        culprits = []
        for n in sorted(_names(expr)):
            if n in p.traces or n in eqs.signals or n in eqs.scalars or n == "w":
                continue
            for factor, want in ((sec, "s"), (sec ** -1, "Hz")):
                trial = dict(dims, **{n: dims[n] * factor})
                try:
                    if _dims(expr, trial, "") == expected:
                        culprits.append(f"{n} has units {_unit(dims[n])} where {_unit(dims[n] * factor)} fits "
                                        f"(a {'time constant' if want == 's' else 'rate'} without its unit?)")
                except DimensionMismatchError:
                    pass
        what = (f"it has units {_unit(got)}, expected {_unit(expected)}" if got is not None else detail)
        hint = ("; " + "; ".join(culprits)) if culprits else ("; names and units: " + ", ".join(
            f"{n}: {_unit(dims[n])}" for n in sorted(_names(expr))))
        raise RuleError(f"{eqs.name}: units do not match in `{text}`: {what}{hint}")


@functools.lru_cache(maxsize=128)
def _compile(eqs: RuleEquations, frozen_ns: tuple) -> "CompiledRule":
    from brian2.units.fundamentalunits import DIMENSIONLESS

    p = eqs._parsed()
    where = eqs.name
    values = {k: v for k, v, _ in frozen_ns}
    dims = {k: d for k, _, d in frozen_ns}
    known = {"w"} | set(p.traces) | set(eqs.signals) | set(eqs.scalars) | set(values)
    unknown = sorted(p.names - known)
    for n in unknown:
        if n.endswith("_pre") or n.endswith("_post"):
            raise RuleError(f"{where}: names {n!r}, a variable of another group (the {n.rsplit('_', 1)[1]}synaptic "
                            "cell's state, not declared): declare it as a signal (signals={name: pathway}) or a "
                            "trace, or give it in the namespace if it is a constant")
    if unknown:
        raise RuleError(f"{where}: names {unknown} that are neither the synapse's weight w, its traces "
                        f"{sorted(p.traces)}, a declared signal {sorted(eqs.signals)} or scalar {list(eqs.scalars)}, "
                        f"nor a parameter of the namespace {sorted(values)}: another cell's or synapse's variable is "
                        "not local (declare a signal delivered by a pathway, or give the parameter)")
    clash = sorted(set(values) & ({"w", "pre", "post"} | set(p.traces) | set(eqs.signals) | set(eqs.scalars)))
    if clash:
        raise RuleError(f"{where}: namespace entries {clash} clash with the rule's variables")
    dims.update({"w": p.w_dim, **{n: t[0] for n, t in p.traces.items()},
                 **{n: DIMENSIONLESS for n in list(eqs.signals) + list(eqs.scalars)}})
    _check_units(eqs, p, dims)
    pre_s, post_s = _sym("pre"), _sym(eqs.post_events)
    rate = _sym(eqs.rate)
    fast = [n for n in p.traces if n not in eqs.slow]
    # increments of fast traces: constant += / -= only
    inc = {n: {"on_pre": sympy.Integer(0), "on_post": sympy.Integer(0)} for n in fast}
    for path, stmts in (("on_pre", p.pre), ("on_post", p.post)):
        for var, op, expr, line, _ in stmts:
            if var in fast:
                if op not in ("+=", "-=") or (_names(expr) - set(values)):
                    raise RuleError(f"{where}: {path}: {line!r}: a fast trace may only be raised or lowered by a "
                                    "constant (A += a); declare it slow=(...) or use a constant increment")
                inc[var][path] += expr if op == "+=" else -expr
    # mean over one window T = 1/rate: <A> = tau * (nu_pre a_pre + nu_post a_post), nu = activity * rate
    means = {n: sympy.simplify(-(rate * pre_s * inc[n]["on_pre"] + rate * post_s * inc[n]["on_post"]) / p.traces[n][1])
             for n in fast}
    base = {n: _sym(n) for n in ["w", *p.traces]}
    drift = {}
    for target in ["w", *eqs.slow]:
        total = sympy.Integer(0)
        for path, stmts, count in (("on_pre", p.pre, pre_s), ("on_post", p.post, post_s)):
            change = _execute(stmts, base)[target] - _sym(target)
            for n in fast:
                if sympy.simplify(sympy.diff(change, _sym(n), 2)) != 0:
                    raise RuleError(f"{where}: {path}: the change of {target!r} is not linear in the trace {n!r}; "
                                    "the rate limit (mean traces) would not be exact")
            total += count * _replace(change, means)
        if target != "w":
            total += _sym(target) * p.traces[target][1] / rate  # the decay over the window 1/rate
        drift[target] = sympy.simplify(total)
    slow_side = {}
    for n in eqs.slow:
        reads = _names(drift[n]) - set(values)
        post_names = {"post", eqs.post_events, n, *eqs.signals, *eqs.scalars}
        if reads <= {"pre", n, *eqs.scalars}:
            side = "pre"
        elif reads <= post_names and "pre" not in reads:
            side = "post"
        else:
            raise RuleError(f"{where}: slow trace {n!r} reads {sorted(reads)}: a per-cell trace reads only its own "
                            "cell's spikes (pre or post side)")
        slow_side[n] = side
    return CompiledRule(eqs, dict(values), {k: d for k, d in dims.items()}, drift, slow_side,
                        {n: sympy.simplify(means[n]) for n in fast})


# ----------------------------------------------------------------------------- the compiled rule
def _evaluate(expr: sympy.Expr, env: Mapping[str, object]):
    """``expr`` evaluated on torch tensors / floats of ``env`` (broadcasting)."""
    if isinstance(expr, sympy.Symbol):
        return env[expr.name]
    if expr.is_number:
        return float(expr)
    args = [_evaluate(a, env) for a in expr.args]
    if isinstance(expr, sympy.Add):
        return functools.reduce(lambda a, b: a + b, args)
    if isinstance(expr, sympy.Mul):
        return functools.reduce(lambda a, b: a * b, args)
    if isinstance(expr, sympy.Pow):
        return args[0] ** args[1]
    name = type(expr).__name__
    if name == "clip":
        x, lo, hi = (torch.as_tensor(a) if not isinstance(a, torch.Tensor) else a for a in args)
        return torch.minimum(torch.maximum(x, lo.to(x.dtype)), hi.to(x.dtype))
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise RuleError(f"function {name!r} is not supported in the torch update")
    x = args[0]
    return fn(x if isinstance(x, torch.Tensor) else torch.tensor(x))


@dataclass(frozen=True)
class CompiledRule:
    """A :class:`RuleEquations` with its namespace: the derived torch update, Brian2 strings and contract.

    ``rate_limit`` maps ``"w"`` and each slow trace to its symbolic change over a window ``1 / rate``
    (parameters as symbols, values in ``values``, SI units); ``slow_side`` says which cell each slow
    trace belongs to; ``mean_traces`` the stationary means of the fast traces.
    """

    equations: RuleEquations
    values: Mapping[str, float]
    dims: Mapping[str, object] = field(repr=False)
    rate_limit: Mapping[str, sympy.Expr]
    slow_side: Mapping[str, str]
    mean_traces: Mapping[str, sympy.Expr]

    @property
    def reads(self) -> set:
        """The variables the rate limit of ``w`` reads (``pre``, ``post``, ``w``, signals, scalars, slow traces)."""
        return _names(self.rate_limit["w"]) - set(self.values)

    @property
    def contract(self) -> Contract:
        """The locality contract derived from the names the rule reads (module docstring, (c))."""
        e = self.equations
        reads = self.reads
        allows = set()
        if "pre" in reads:
            allows.add("pre")
        if "post" in reads:
            allows.add("post")
        if "w" in reads or "w" in e._parsed().names or e.bounds is not None:
            allows.add("weight")  # read by the rate limit, by a statement, or by the clip to the bounds
        if self.equations.traces:
            allows.add("trace")
        pathways = tuple(sorted({e.signals[s] for s in e.signals if s in reads}))
        if pathways:
            allows.add("neuron_signal")
        if any(s in reads for s in e.scalars):
            allows.add("global_scalar")
        return Contract(e.name, allows=allows, pathways=pathways)

    # ------------------------------------------------------------------ torch
    def _env(self, where: str, pre, post, W, named: Mapping[str, object], targets) -> tuple:
        e = self.equations
        if not isinstance(W, torch.Tensor) or W.ndim != 2:
            raise RuleError(f"{where}: W must be a (n_post, n_pre) tensor, got {getattr(W, 'shape', type(W).__name__)}")
        n_post, n_pre = W.shape
        need = set().union(*(_names(self.rate_limit[t]) for t in targets)) - set(self.values)
        expected = {"pre": n_pre, "post": n_post, **{s: n_post for s in e.signals},
                    **{s: (n_pre if side == "pre" else n_post) for s, side in self.slow_side.items()}}
        given = {"pre": pre, "post": post, **named}
        allowed = set(expected) | set(e.scalars)
        extra = sorted(set(named) - allowed)
        if extra:
            raise RuleError(f"{where}: unknown inputs {extra}; this rule takes {sorted(allowed - {'pre', 'post'})}")
        batch = None
        env = {"w": W[None], **{k: v for k, v in self.values.items()}}
        for name in sorted(need - {"w"}):
            v = given.get(name)
            if v is None:
                raise RuleError(f"{where}: the rule reads {name!r}; pass it")
            if name in e.scalars:
                v = torch.as_tensor(v, dtype=W.dtype)
                if v.ndim > 1:
                    raise RuleError(f"{where}: scalar {name!r} must be a number or a (batch,) tensor, got shape {tuple(v.shape)}")
                env[name] = v.reshape(-1, 1, 1) if v.ndim == 1 else v
                continue
            if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[1] != expected[name]:
                raise RuleError(f"{where}: {name} must be a (batch, {expected[name]}) tensor, got "
                                f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
            if batch is not None and v.shape[0] != batch:
                raise RuleError(f"{where}: {name} has batch {v.shape[0]}, other inputs {batch}: they must share the batch")
            batch = v.shape[0]
            pre_side = name == "pre" or self.slow_side.get(name) == "pre"
            env[name] = v[:, None, :] if pre_side else v[:, :, None]
        return env, batch or 1, n_post, n_pre

    def torch_update(self, pre=None, post=None, W=None, **named) -> torch.Tensor:
        """``dW`` (n_post, n_pre): the rate limit of ``w`` summed over the batch's samples.

        ``pre`` (batch, n_pre), ``post`` (batch, n_post) activities (fractions of ``rate``), ``W`` the
        weights; ``named``: signals (batch, n_post), slow traces (batch, n_cells), scalars (numbers or
        (batch,) tensors). Pure: the inputs are not changed."""
        where = f"{self.equations.name}.torch_update"
        env, batch, n_post, n_pre = self._env(where, pre, post, W, named, ["w"])
        out = _evaluate(self.rate_limit["w"], env)
        return torch.as_tensor(out, dtype=W.dtype).expand(batch, n_post, n_pre).sum(0)

    def torch_traces(self, pre=None, post=None, W=None, **named) -> dict:
        """Per-sample change of each slow trace over the window: ``{name: (batch, n_cells)}``."""
        where = f"{self.equations.name}.torch_traces"
        env, batch, n_post, n_pre = self._env(where, pre, post, W, named, list(self.slow_side))
        out = {}
        for n, side in self.slow_side.items():
            v = torch.as_tensor(_evaluate(self.rate_limit[n], env), dtype=W.dtype)
            v = v.expand(batch, n_post, 1) if side == "post" else v.expand(batch, 1, n_pre)
            out[n] = v[:, :, 0] if side == "post" else v[:, 0, :]
        return out

    def bound(self, W: torch.Tensor) -> torch.Tensor:
        """``W`` clipped to the declared bounds (unchanged without bounds)."""
        b = self.equations._parsed().bounds
        if b is None:
            return W
        lo, hi = (float(_replace(x, self.values)) for x in b)
        return W.clamp(lo, hi)

    def checkable(self, n_pre: int, n_post: int, keys: Mapping[str, str] | None = None,
                  populations: tuple = ("pre", "post"), layer: str = "W") -> Checkable:
        """The torch update as a one-layer :class:`Checkable` under the derived :attr:`contract`.

        State: ``pre`` (Cells of the pre population), ``post`` (Cells of the post population), ``W``
        (the layer's weights), each signal (Signal to the post population through its pathway), each slow
        trace (Trace of its cell's population), each scalar (Scalar); ``keys`` renames entries
        (e.g. ``{"pre": "x"}``)."""
        e = self.equations
        keys = dict(keys or {})
        p_pop, q_pop = populations
        reads = self.reads
        kinds = {"pre": Cells(p_pop), "post": Cells(q_pop), "w": Weight(layer),
                 **{s: Signal(q_pop, e.signals[s]) for s in e.signals},
                 **{s: Trace(p_pop if side == "pre" else q_pop) for s, side in self.slow_side.items()},
                 **{s: Scalar(s) for s in e.scalars}}
        names = [n for n in kinds if n in reads or n in ("pre", "w")]
        key = {n: keys.get(n, "W" if n == "w" else n) for n in names}
        spec = StateSpec({p_pop: n_pre, q_pop: n_post}, (Layer(layer, post=q_pop, pre=p_pop),),
                         {key[n]: kinds[n] for n in names})

        def fn(s):
            named = {n: s[key[n]] for n in names if n not in ("pre", "post", "w")}
            return {layer: self.torch_update(s[key["pre"]], s[key["post"]] if "post" in key else None, s[key["w"]], **named)}

        return Checkable(e.name, spec, {layer: self.contract}, fn)

    # ------------------------------------------------------------------ Brian2
    def brian2(self, namespace: Mapping[str, object] | None = None) -> dict:
        """``{"model", "on_pre", "on_post", "namespace"}`` for a Brian2 ``Synapses``: signals read from the
        post group (``s_post``), scalars as shared synaptic variables, weight assignments clipped to the
        bounds; ``namespace`` is passed through (by default the parameters given to
        :meth:`RuleEquations.compile`, with their units)."""
        from brian2.units.fundamentalunits import DIMENSIONLESS, Quantity
        from brian2.utils.stringtools import word_substitute

        if namespace is None:
            namespace = {k: (v if self.dims[k] == DIMENSIONLESS else Quantity(v, dim=self.dims[k]))
                         for k, v in self.values.items()}

        e = self.equations
        p = e._parsed()
        rename = {s: f"{s}_post" for s in e.signals}
        model = e.model.strip() + "".join(f"\n{s} : 1 (shared)" for s in e.scalars)

        def statement(var, op, code):
            code = word_substitute(code, rename)
            if var != "w" or e.bounds is None:
                return f"{var} {op} {code}"
            lo, hi = (word_substitute(b, rename) for b in e.bounds)
            value = code if op == "=" else f"w {op[0]} ({code})"
            return f"w = clip({value}, {lo}, {hi})"

        on_pre = "\n".join(statement(v, op, code) for v, op, _, _, code in p.pre)
        on_post = "\n".join(statement(v, op, code) for v, op, _, _, code in p.post)
        return {"model": model, "on_pre": on_pre, "on_post": on_post, "namespace": dict(namespace or {})}


# ----------------------------------------------------------------------------- rules as descriptions
class EquationRule:
    """Mixin for a registered rule written with :class:`RuleEquations`: subclasses set ``EQUATIONS`` and
    implement :meth:`namespace` (their fields as Brian2 quantities); the torch update, checkable,
    contract and Brian2 strings come from the one description."""

    EQUATIONS: RuleEquations
    #: Brian2 unit (attribute name of the ``brian2`` module, e.g. ``"second"``, ``"Hz"``) of each parameter
    #: that has one; the others are plain numbers
    UNITS: ClassVar[dict] = {}

    def namespace(self) -> dict:
        """The rule's parameters (its :func:`~neurolearn.describe.param` fields) as Brian2 quantities, each
        times its unit in :attr:`UNITS`."""
        from ..sim.brian2_kwta import quiet_brian2

        b2 = quiet_brian2()
        return {name: getattr(self, name) * getattr(b2, self.UNITS[name]) if name in self.UNITS else getattr(self, name)
                for name in self.params()}

    @functools.cached_property
    def compiled(self) -> CompiledRule:
        """The description compiled with :meth:`namespace` (once per rule object: it is frozen)."""
        return self.EQUATIONS.compile(self.namespace())

    @property
    def contract(self) -> Contract:
        """The contract derived from the description."""
        return self.compiled.contract

    def torch_update(self, pre, post, W, **named) -> torch.Tensor:
        """``dW`` (n_post, n_pre) of the rate limit summed over the batch (:meth:`CompiledRule.torch_update`)."""
        return self.compiled.torch_update(pre, post, W, **named)

    def checkable(self, n_pre: int, n_post: int) -> Checkable:
        """The torch update under the derived contract (:meth:`CompiledRule.checkable`)."""
        return self.compiled.checkable(n_pre, n_post)

    def brian2_equations(self) -> dict:
        """Brian2 ``Synapses`` ``model`` / ``on_pre`` / ``on_post`` strings and ``namespace`` (with units)."""
        return self.compiled.brian2(self.namespace())

