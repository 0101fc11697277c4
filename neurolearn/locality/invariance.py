"""Invariance properties every rule's equation implies, as reusable checks over Hypothesis-drawn states.

* permutation equivariance: renumbering the cells of a population renumbers the update the same way
  (a rule that treats cells by their index, not by their signals, fails);
* batch additivity: with ``batch="samples"`` the update of a batch is the sum of per-sample updates;
* scaling laws: e.g. the delta rule ``g = e x^T`` is linear in ``x`` -- scaling ``x`` by ``c`` scales
  ``g`` by ``c``; the contrastive Hebbian rule is linear in each phase's post activity.

Each check runs over ``max_examples`` states drawn by :func:`neurolearn.locality.strategies.states`
(the values themselves drawn by Hypothesis: signed zeros, tiny and large magnitudes, exact ties), and
the permutation too; when one fails, Hypothesis shrinks it and the ``AssertionError`` writes the
smallest failing state out in full, so it replays. Values agree when they differ by at most
``rtol (|a| + |b|)`` plus ``atol`` times the scale of the state's products (``max(1, max |entry|)^3``:
reordering a sum of large terms that cancel is rounding, not a broken law).
"""

from __future__ import annotations

from typing import Callable

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from . import strategies as nls
from .checker import CheckerError, _call, _slice_batch
from .contract import PER_SAMPLE, Cells, CellParam, Checkable, Fixed, Shared, Signal, Trace, Weight

#: default tolerances of the invariance checks (module docstring)
RTOL, ATOL = 1e-6, 1e-12


def _styles(style) -> tuple:
    if style is None:
        return nls.VALUE_STYLES
    styles = (style,) if isinstance(style, str) else tuple(style)
    bad = [s for s in styles if s not in nls.VALUE_STYLES]
    if bad:
        raise CheckerError(f"invariance: style must be None (all) or among {nls.VALUE_STYLES}, got {bad}")
    return styles


def _close(a: torch.Tensor, b: torch.Tensor, state: dict, rtol: float, atol: float) -> bool:
    a, b = a.double(), b.double()
    big = max([1.0] + [float(v.abs().max()) for v in state.values() if v.numel()])
    tol = rtol * (a.abs() + b.abs()) + atol * big**3
    same_nan = torch.isnan(a) & torch.isnan(b)
    return bool(((a - b).abs() <= tol).logical_or(same_nan).logical_or(a == b).all())


def _over_drawn(what: str, strategy, prop, max_examples: int, seed: int) -> None:
    """Run ``prop(example)`` over ``max_examples`` drawn examples; a failure is shrunk and re-raised."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise CheckerError(f"{what}: max_examples must be an integer >= 1, got {max_examples!r}")

    @hypothesis_seed(seed)
    @settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example):
        prop(example)

    run()


def permute_state(checkable: Checkable, state: dict, population: str, perm: torch.Tensor) -> dict:
    """The state with the cells of ``population`` renumbered by ``perm`` in every entry that indexes them."""
    spec = checkable.spec
    out = {}
    for key, v in state.items():
        e = spec.entries[key]
        if isinstance(e, (Cells, Trace, Signal)) and e.population == population:
            v = v[..., perm]  # (batch, n) or (batch, time, n)
        elif isinstance(e, CellParam) and e.population == population:
            v = v[perm]
        elif isinstance(e, (Weight, Fixed)):
            post, pre = (spec.layer(e.layer).post, spec.layer(e.layer).pre) if isinstance(e, Weight) else (e.post, e.pre)
            if post == population:
                v = v[perm, :]
            if pre == population:
                v = v[:, perm]
        out[key] = v
    return out


def check_permutation_equivariance(checkable: Checkable, population: str, batch: int = 3, seed: int = 0,
                                   style=None, atol: float = ATOL, rtol: float = RTOL, max_examples: int = 10) -> None:
    """Raise ``AssertionError`` unless ``update(permuted state) == permuted update(state)`` for drawn states
    (batch ``1..batch``, every value style unless ``style`` names some) and drawn permutations."""
    spec = checkable.spec
    if population not in spec.populations:
        raise CheckerError(f"check_permutation_equivariance: no population {population!r}; "
                           f"populations are {sorted(spec.populations)}")
    shared = [l.name for l in spec.layers if isinstance(l, Shared) and population in (l.post, l.pre)]
    if shared:
        raise CheckerError(f"check_permutation_equivariance: population {population!r} is an end of the shared "
                           f"layer(s) {shared}, whose positions fix the order of its cells")
    n = spec.populations[population]

    def prop(example):
        state, order = example
        perm = torch.tensor(order, dtype=torch.long)
        base = _call(checkable, state)
        moved = _call(checkable, permute_state(checkable, state, population, perm))
        for layer in spec.layers:
            want = base[layer.name]
            if layer.post == population:
                want = want[..., perm, :]
            if layer.pre == population:
                want = want[..., perm]
            if not _close(moved[layer.name], want, state, rtol, atol):
                raise AssertionError(f"{checkable.name}: permuting the cells of {population!r} by {order} did not "
                                     f"permute dW of layer {layer.name!r} the same way; state: {nls.describe(state)}")

    strategy = st.tuples(nls.states(spec, batch, _styles(style)), st.permutations(range(n)))
    _over_drawn("check_permutation_equivariance", strategy, prop, max_examples, seed)


def check_batch_additivity(checkable: Checkable, batch: int = 4, seed: int = 0, style=None, atol: float = ATOL,
                           rtol: float = RTOL, max_examples: int = 10) -> None:
    """Raise ``AssertionError`` unless the batch update equals the sum of per-sample updates, for drawn states
    (batch ``1..batch``)."""
    spec = checkable.spec

    def prop(state):
        size = next((state[k].shape[0] for k, e in spec.entries.items() if isinstance(e, PER_SAMPLE)), 1)
        base = _call(checkable, state)
        parts = [_call(checkable, _slice_batch(spec, state, b)) for b in range(size)]
        for layer in spec.layers:
            total = sum(p[layer.name].double() for p in parts)
            if not _close(total, base[layer.name], state, rtol * size, atol * size):
                raise AssertionError(f"{checkable.name}: dW of layer {layer.name!r} of a batch is not the sum of "
                                     f"its per-sample updates (batch statistics); state: {nls.describe(state)}")

    _over_drawn("check_batch_additivity", nls.states(spec, batch, _styles(style)), prop, max_examples, seed)


def check_scaling(checkable: Checkable, entry: str, factor: float, expected: Callable[[float], float],
                  batch: int = 3, seed: int = 0, style="uniform", layers=None, atol: float = ATOL,
                  rtol: float = 1e-4, max_examples: int = 10) -> None:
    """Raise ``AssertionError`` unless scaling ``entry`` by ``factor`` scales dW by ``expected(factor)``, for
    drawn states (values in ``style``, uniform [0, 1] by default: laws of rules with thresholds hold there)."""
    spec = checkable.spec
    if entry not in spec.entries:
        raise CheckerError(f"check_scaling: no entry {entry!r}; entries are {sorted(spec.entries)}")

    def prop(state):
        base = _call(checkable, state)
        bigger = {**state, entry: state[entry] * factor}
        scaled = _call(checkable, bigger)
        for layer in layers or [l.name for l in spec.layers]:
            if not _close(scaled[layer], base[layer] * expected(factor), bigger, rtol, atol):
                raise AssertionError(f"{checkable.name}: scaling {entry!r} by {factor} did not scale dW of layer "
                                     f"{layer!r} by {expected(factor)}; state: {nls.describe(state)}")

    _over_drawn("check_scaling", nls.states(spec, batch, _styles(style)), prop, max_examples, seed)
