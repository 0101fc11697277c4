"""Invariance properties every rule's equation implies, as reusable checks over Hypothesis-drawn states.

* permutation equivariance: renumbering the cells of a population renumbers the update the same way
  (a rule that treats cells by their index, not by their signals, fails);
* batch additivity: with ``batch="samples"`` the update of a batch is the sum of per-sample updates, so
  for any split of the batch into parts it is the sum of the parts' updates (the split is drawn: each
  sample's part; one sample per part is the per-sample sum);
* scaling laws: e.g. the delta rule ``g = e x^T`` is linear in ``x`` -- scaling ``x`` by ``c`` scales
  ``g`` by ``c``; the contrastive Hebbian rule is linear in each phase's post activity.

Each check runs over ``max_examples`` states drawn by :func:`neurolearn.locality.strategies.states`
(the values themselves drawn by Hypothesis: signed zeros, tiny and large magnitudes, exact ties), and
the permutation or the split too; when one fails, Hypothesis shrinks state and permutation / split
together and the ``AssertionError`` writes the smallest failing example out in full (the state with
:func:`neurolearn.locality.strategies.describe`, read back by ``strategies.parse``), so it replays.
Each check returns the :class:`Drawn` record of what it drew (the permutations, the splits). Values agree when they differ by at most
``rtol (|a| + |b|)`` plus ``atol`` times the scale of the state's products (``max(1, max |entry|)^3``:
reordering a sum of large terms that cancel is rounding, not a broken law).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from . import strategies as nls
from .checker import CheckerError, _call
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


@dataclass
class Drawn:
    """What an invariance check drew: ``examples`` (how many examples ran), ``draws`` (per example the
    permutation or the split -- each sample's part -- or the scaled entry's factor)."""

    examples: int = 0
    draws: list = field(default_factory=list)


def _over_drawn(what: str, strategy, prop, max_examples: int, seed: int) -> Drawn:
    """Run ``prop(example, record)`` over ``max_examples`` drawn examples; a failure is shrunk and re-raised."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise CheckerError(f"{what}: max_examples must be an integer >= 1, got {max_examples!r}")
    drawn = Drawn()

    @hypothesis_seed(seed)
    @settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example):
        drawn.examples += 1
        prop(example, drawn.draws.append)

    run()
    return drawn


@st.composite
def _state_and_split(draw, spec, batch: int, styles):
    """A drawn state and a drawn split of its batch: ``parts[b]`` is the part of sample ``b``."""
    state = draw(nls.states(spec, batch, styles))
    size = next((state[k].shape[0] for k, e in spec.entries.items() if isinstance(e, PER_SAMPLE)), 1)
    parts = draw(st.lists(st.integers(0, max(size - 1, 0)), min_size=size, max_size=size))
    return state, parts


def split_state(checkable: Checkable, state: dict, samples) -> dict:
    """The state restricted to the samples ``samples`` (indices into the batch) in every per-sample entry."""
    index = torch.as_tensor(list(samples), dtype=torch.long)
    return {k: (v.index_select(0, index) if isinstance(checkable.spec.entries[k], PER_SAMPLE) else v)
            for k, v in state.items()}


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
                                   style=None, atol: float = ATOL, rtol: float = RTOL, max_examples: int = 10) -> Drawn:
    """Raise ``AssertionError`` unless ``update(P state) == P update(state)`` for drawn states (batch
    ``1..batch``, every value style unless ``style`` names some) and drawn permutations ``P`` of the cells
    of ``population`` (rows of dW for its post side, columns for its pre side); return what was drawn."""
    spec = checkable.spec
    if population not in spec.populations:
        raise CheckerError(f"check_permutation_equivariance: no population {population!r}; "
                           f"populations are {sorted(spec.populations)}")
    shared = [l.name for l in spec.layers if isinstance(l, Shared) and population in (l.post, l.pre)]
    if shared:
        raise CheckerError(f"check_permutation_equivariance: population {population!r} is an end of the shared "
                           f"layer(s) {shared}, whose positions fix the order of its cells")
    n = spec.populations[population]

    def prop(example, record):
        state, order = example
        record(list(order))
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
    return _over_drawn("check_permutation_equivariance", strategy, prop, max_examples, seed)


def check_batch_additivity(checkable: Checkable, batch: int = 4, seed: int = 0, style=None, atol: float = ATOL,
                           rtol: float = RTOL, max_examples: int = 10) -> Drawn:
    """Raise ``AssertionError`` unless ``dW(batch) == sum over parts dW(part)`` for drawn states (batch
    ``1..batch``) and drawn splits of the batch into parts (what ``batch="samples"`` implies: the update
    is the sum of per-sample updates); return what was drawn."""
    spec = checkable.spec

    def prop(example, record):
        state, parts = example
        record(list(parts))
        base = _call(checkable, state)
        groups = [[b for b, p in enumerate(parts) if p == q] for q in sorted(set(parts))]
        pieces = [_call(checkable, split_state(checkable, state, g)) for g in groups]
        for layer in spec.layers:
            total = sum(p[layer.name].double() for p in pieces)
            n = max(len(parts), 1)
            if not _close(total, base[layer.name], state, rtol * n, atol * n):
                raise AssertionError(f"{checkable.name}: dW of layer {layer.name!r} of a batch is not the sum of the "
                                     f"updates of its parts {groups} (batch statistics); state: {nls.describe(state)}")

    return _over_drawn("check_batch_additivity", _state_and_split(spec, batch, _styles(style)), prop, max_examples, seed)


def check_scaling(checkable: Checkable, entry: str, factor: float, expected: Callable[[float], float],
                  batch: int = 3, seed: int = 0, style="uniform", layers=None, atol: float = ATOL,
                  rtol: float = 1e-4, max_examples: int = 10) -> Drawn:
    """Raise ``AssertionError`` unless scaling ``entry`` by ``factor`` scales dW by ``expected(factor)``, for
    drawn states (values in ``style``, uniform [0, 1] by default: laws of rules with thresholds hold there)."""
    spec = checkable.spec
    if entry not in spec.entries:
        raise CheckerError(f"check_scaling: no entry {entry!r}; entries are {sorted(spec.entries)}")

    def prop(state, record):
        record(factor)
        base = _call(checkable, state)
        bigger = {**state, entry: state[entry] * factor}
        scaled = _call(checkable, bigger)
        for layer in layers or [l.name for l in spec.layers]:
            if not _close(scaled[layer], base[layer] * expected(factor), bigger, rtol, atol):
                raise AssertionError(f"{checkable.name}: scaling {entry!r} by {factor} did not scale dW of layer "
                                     f"{layer!r} by {expected(factor)}; state: {nls.describe(state)}")

    return _over_drawn("check_scaling", nls.states(spec, batch, _styles(style)), prop, max_examples, seed)
