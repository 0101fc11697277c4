"""Invariance properties every rule's equation implies, as reusable checks.

* permutation equivariance: renumbering the cells of a population renumbers the update the same way
  (a rule that treats cells by their index, not by their signals, fails);
* batch additivity: with ``batch="samples"`` the update of a batch is the sum of per-sample updates;
* scaling laws: e.g. the delta rule ``g = e x^T`` is linear in ``x`` -- scaling ``x`` by ``c`` scales
  ``g`` by ``c``; the contrastive Hebbian rule is linear in each phase's post activity.
"""

from __future__ import annotations

from typing import Callable

import torch

from .checker import CheckerError, _call, _slice_batch, draw_state
from .contract import Cells, CellParam, Checkable, Fixed, Shared, Signal, Trace, Weight


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
                                   style: str = "normal", atol: float = 1e-5) -> None:
    """Raise ``AssertionError`` unless ``update(permuted state) == permuted update(state)``."""
    if population not in checkable.spec.populations:
        raise CheckerError(f"check_permutation_equivariance: no population {population!r}; "
                           f"populations are {sorted(checkable.spec.populations)}")
    spec = checkable.spec
    shared = [l.name for l in spec.layers if isinstance(l, Shared) and population in (l.post, l.pre)]
    if shared:
        raise CheckerError(f"check_permutation_equivariance: population {population!r} is an end of the shared "
                           f"layer(s) {shared}, whose positions fix the order of its cells")
    state = draw_state(spec, batch, {k: style for k in spec.entries}, seed)
    perm = torch.randperm(spec.populations[population], generator=torch.Generator().manual_seed(seed + 1))
    base = _call(checkable, state)
    moved = _call(checkable, permute_state(checkable, state, population, perm))
    for layer in spec.layers:
        want = base[layer.name]
        if layer.post == population:
            want = want[..., perm, :]
        if layer.pre == population:
            want = want[..., perm]
        if not torch.allclose(moved[layer.name], want, atol=atol, rtol=1e-5):
            raise AssertionError(f"{checkable.name}: permuting the cells of {population!r} did not permute "
                                 f"dW of layer {layer.name!r} the same way")


def check_batch_additivity(checkable: Checkable, batch: int = 4, seed: int = 0, style: str = "normal") -> None:
    """Raise ``AssertionError`` unless the batch update equals the sum of per-sample updates."""
    spec = checkable.spec
    state = draw_state(spec, batch, {k: style for k in spec.entries}, seed)
    base = _call(checkable, state)
    parts = [_call(checkable, _slice_batch(spec, state, b)) for b in range(batch)]
    for layer in spec.layers:
        total = sum(p[layer.name] for p in parts)
        if not torch.allclose(total, base[layer.name], atol=1e-5, rtol=1e-5):
            raise AssertionError(f"{checkable.name}: dW of layer {layer.name!r} of a batch is not the sum of "
                                 "its per-sample updates (batch statistics)")


def check_scaling(checkable: Checkable, entry: str, factor: float, expected: Callable[[float], float],
                  batch: int = 3, seed: int = 0, style: str = "uniform", layers=None) -> None:
    """Raise ``AssertionError`` unless scaling ``entry`` by ``factor`` scales dW by ``expected(factor)``."""
    spec = checkable.spec
    if entry not in spec.entries:
        raise CheckerError(f"check_scaling: no entry {entry!r}; entries are {sorted(spec.entries)}")
    state = draw_state(spec, batch, {k: style for k in spec.entries}, seed)
    base = _call(checkable, state)
    scaled = _call(checkable, {**state, entry: state[entry] * factor})
    for layer in layers or [l.name for l in spec.layers]:
        if not torch.allclose(scaled[layer], base[layer] * expected(factor), atol=1e-5, rtol=1e-4):
            raise AssertionError(f"{checkable.name}: scaling {entry!r} by {factor} did not scale dW of layer "
                                 f"{layer!r} by {expected(factor)}")
