"""Hypothesis strategies for locality and invariance tests of your own rules.

    from hypothesis import given
    from neurolearn.locality import strategies as nls

    @given(nls.states(my_checkable.spec))
    def test_my_rule_is_finite(state):
        assert torch.isfinite(my_checkable.update(state)["W"]).all()

``values(shape)`` draws a tensor in one of the checker's styles (normal-range numbers, uniform [0, 1],
binary, few levels with exact ties, extreme magnitudes -- tiny ``1e-30``, large ``1e4`` and signed zeros
``-0.0`` --, zeros of both signs, and ``mixed``: any of these numbers side by side, with ties); the numbers
themselves are drawn by
Hypothesis (not a seed for torch's generator), so a failing case shrinks to small, simple values and
replays from Hypothesis' database. ``states(spec)`` draws a whole state for a :class:`StateSpec` (batch
size drawn too); ``sizes(n)`` population sizes for a factory; ``checkables(factory, n)`` a checkable of
drawn sizes.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from .checker import STYLES
from .contract import StateSpec


#: the special numbers: signed zeros, tiny and large magnitudes of both signs, and +-1 (the "extreme" style)
TINY, LARGE = 1e-30, 1e4
SPECIAL = (0.0, -0.0, TINY, -TINY, 1.0, -1.0, LARGE, -LARGE)
#: the styles of :func:`values`: the checker's and ``mixed``
VALUE_STYLES = tuple(STYLES) + ("mixed",)
_ELEMENTS = {
    "normal": st.floats(-3.0, 3.0, allow_nan=False),
    "uniform": st.floats(0.0, 1.0, allow_nan=False),
    "binary": st.sampled_from([0.0, 1.0]),
    "extreme": st.sampled_from(SPECIAL),
    "zeros": st.sampled_from([0.0, -0.0]),
    "mixed": st.one_of(st.sampled_from(SPECIAL), st.floats(-3.0, 3.0, allow_nan=False)),
}


@st.composite
def values(draw, shape, styles=VALUE_STYLES) -> torch.Tensor:
    """A float64 tensor of ``shape`` whose numbers are drawn by Hypothesis in a drawn style (module docstring)."""
    style = draw(st.sampled_from(tuple(styles)))
    if style == "ties":
        levels = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=1, max_size=3))  # exact ties
        element = st.sampled_from(levels)
    else:
        element = _ELEMENTS.get(style, _ELEMENTS["normal"])
    n = 1
    for s in shape:
        n *= s
    flat = draw(st.lists(element, min_size=n, max_size=n))
    return torch.tensor(flat, dtype=torch.float64).reshape(tuple(shape))


@st.composite
def states(draw, spec: StateSpec, max_batch: int = 3, styles=VALUE_STYLES) -> dict:
    """A state for ``spec``: every entry drawn with :func:`values`, one batch size for all."""
    batch = draw(st.integers(1, max_batch))
    return {key: draw(values(spec.shape(key, batch), styles)) for key in spec.entries}


def sizes(n: int, max_size: int = 4):
    """``n`` population sizes in ``1..max_size``."""
    return st.lists(st.integers(1, max_size), min_size=n, max_size=n)


@st.composite
def checkables(draw, factory, n: int, max_size: int = 4):
    """``factory(sizes)`` for drawn sizes."""
    return factory(draw(sizes(n, max_size)))


def describe(state) -> str:
    """A drawn state written out in full (entry: nested list), so a failing example can be replayed."""
    return "; ".join(f"{k} = {v.tolist()}" for k, v in state.items())
