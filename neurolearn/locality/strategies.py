"""Hypothesis strategies for locality and invariance tests of your own rules.

    from hypothesis import given
    from neurolearn.locality import strategies as nls

    @given(nls.states(my_checkable.spec))
    def test_my_rule_is_finite(state):
        assert torch.isfinite(my_checkable.update(state)["W"]).all()

``values(shape)`` draws a tensor in one of the checker's styles (Gaussian, uniform [0, 1], binary,
few levels with exact ties, extreme magnitudes, zeros); ``states(spec)`` a whole state for a
:class:`StateSpec` (batch size drawn too); ``sizes(n)`` population sizes for a factory; and
``checkables(factory, n)`` a checkable of drawn sizes. These are the draws :func:`check` uses.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from .checker import STYLES, _values
from .contract import StateSpec


@st.composite
def values(draw, shape, styles=STYLES) -> torch.Tensor:
    """A float64 tensor of ``shape`` in a drawn style (see module docstring)."""
    style = draw(st.sampled_from(tuple(styles)))
    seed = draw(st.integers(0, 2**31 - 1))
    return _values(tuple(shape), style, torch.Generator().manual_seed(seed)).double()


@st.composite
def states(draw, spec: StateSpec, max_batch: int = 3, styles=STYLES) -> dict:
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
