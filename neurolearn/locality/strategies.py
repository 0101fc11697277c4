"""Hypothesis strategies for locality and invariance tests of your own rules (and the checker's own search).

    from hypothesis import given
    from neurolearn.locality import strategies as nls

    @given(nls.states(my_checkable.spec))
    def test_my_rule_is_finite(state):
        assert torch.isfinite(my_checkable.update(state)["W"]).all()

``values(shape)`` draws a tensor in one of the styles of :data:`VALUE_STYLES` (``normal``: numbers in
[-3, 3]; uniform [0, 1]; binary; few levels with exact ties; extreme magnitudes -- tiny (``1e-30``),
large (``1e4``), ``+-1`` and signed zeros ``-0.0``; zeros of both signs; ``mixed``: any of these numbers
side by side, half of them special; ``generic``: normal-range numbers, one in :data:`GENERIC_SPECIAL`
of them a special one); the numbers themselves are drawn
by Hypothesis (not a seed for torch's generator), so a failing case shrinks to small, simple values
(``0.0``, ``1.0``, ``2.0``) and replays. Hypothesis' own float draws are biased towards nasty values
too (the bounds, zeros of both signs, subnormals) and it repeats earlier draws, which makes further
ties. ``states(spec)`` draws a whole state for a :class:`StateSpec` (batch size drawn too);
``styled_state(spec, batch, styles)`` one with a given style per entry (what
:func:`neurolearn.locality.check` draws); ``sizes(n)`` population sizes for a factory;
``checkables(factory, n)`` a checkable of drawn sizes. With ``dtype=torch.float16`` the special
magnitudes are those float16 holds (:func:`special_values`). ``describe(state)`` writes a state out in
full and ``parse(text)`` reads it back (a printed failing example replays).
"""

from __future__ import annotations

from typing import Mapping

import torch
from hypothesis import strategies as st

from .contract import StateSpec

#: the value styles of the checker's torch-generator draws (:func:`neurolearn.locality.checker.draw_state`)
STYLES = ("normal", "uniform", "binary", "ties", "extreme", "zeros")
#: the special numbers (float64, float32, bfloat16): signed zeros, tiny and large magnitudes of both signs, +-1
TINY, LARGE = 1e-30, 1e4
SPECIAL = (0.0, 1.0, -1.0, -0.0, TINY, -TINY, LARGE, -LARGE)
#: float16 holds neither 1e-30 (it flushes to zero) nor products of 1e4 (over 65504): its tiny is its
#: smallest normal number 2**-14 and its large 2**6 (a product of three stays finite)
TINY_F16, LARGE_F16 = 2.0**-14, 64.0
#: in the ``generic`` style one number in this many is a special one (the others Hypothesis' floats in [-3, 3])
GENERIC_SPECIAL = 8
#: the styles of :func:`values` (and of the checker's search): the torch styles, ``mixed`` and ``generic``
VALUE_STYLES = tuple(STYLES) + ("mixed", "generic")


_GENERIC = st.floats(-3.0, 3.0, allow_nan=False)


def special_values(dtype=torch.float64) -> tuple:
    """The special numbers for ``dtype``: ``0.0, 1.0, -1.0, -0.0, +-tiny, +-large``, simplest first (a
    shrink moves towards the first) (float16: :data:`TINY_F16`, :data:`LARGE_F16`; otherwise :data:`TINY`,
    :data:`LARGE`)."""
    tiny, large = (TINY_F16, LARGE_F16) if dtype == torch.float16 else (TINY, LARGE)
    return (0.0, 1.0, -1.0, -0.0, tiny, -tiny, large, -large)


def _check_style(style: str) -> None:
    if style not in VALUE_STYLES:
        raise ValueError(f"strategies: style must be one of {VALUE_STYLES}, got {style!r}")


def element(style: str, dtype=torch.float64):
    """A strategy for one number in ``style`` (see the module docstring); it shrinks towards ``0.0`` and
    small integers. ``ties`` needs levels: use :func:`values` (it draws them)."""
    _check_style(style)
    special = special_values(dtype)
    if style == "normal":
        return st.floats(-3.0, 3.0, allow_nan=False)
    if style == "generic":  # normal-range numbers, one in GENERIC_SPECIAL a special one
        generic = st.floats(-3.0, 3.0, allow_nan=False)
        return st.one_of(*([generic] * (GENERIC_SPECIAL - 1)), st.sampled_from(special))
    if style == "uniform":
        return st.floats(0.0, 1.0, allow_nan=False)
    if style == "binary":
        return st.sampled_from([0.0, 1.0])
    if style == "extreme":
        return st.sampled_from(special)
    if style == "zeros":
        return st.sampled_from([0.0, -0.0])
    if style == "mixed":
        return st.one_of(st.sampled_from(special), st.floats(-3.0, 3.0, allow_nan=False))
    return st.floats(-2.0, 2.0, allow_nan=False)  # "ties" without levels: one level


@st.composite
def _numbers(draw, n: int, style: str, dtype):
    if style == "ties":  # exact ties: every number one of at most three levels
        levels = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=1, max_size=3))
        return draw(st.lists(st.sampled_from(levels), min_size=n, max_size=n))
    if style == "generic":  # as element("generic"), drawn a little faster: which kind, then the number
        pick, special, generic = st.integers(0, GENERIC_SPECIAL - 1), st.sampled_from(special_values(dtype)), _GENERIC
        return [draw(special) if draw(pick) == GENERIC_SPECIAL - 1 else draw(generic) for _ in range(n)]
    return draw(st.lists(element(style, dtype), min_size=n, max_size=n))


@st.composite
def values(draw, shape, styles=VALUE_STYLES, dtype=torch.float64) -> torch.Tensor:
    """A tensor of ``shape`` and ``dtype`` (float64 by default) whose numbers are drawn by Hypothesis in a
    style drawn among ``styles`` (module docstring)."""
    style = draw(st.sampled_from(tuple(styles)))
    return draw(values_in(shape, style, dtype))


def values_in(shape, style: str, dtype=torch.float64):
    """A strategy for a tensor of ``shape`` and ``dtype`` with every number in ``style``."""
    _check_style(style)
    n = 1
    for s in shape:
        n *= s
    return _numbers(n, style, dtype).map(lambda flat: torch.tensor(flat, dtype=torch.float64).reshape(tuple(shape)).to(dtype))


@st.composite
def states(draw, spec: StateSpec, max_batch: int = 3, styles=VALUE_STYLES, dtype=torch.float64) -> dict:
    """A state for ``spec``: every entry drawn with :func:`values`, one batch size for all."""
    batch = draw(st.integers(1, max_batch))
    return {key: draw(values(spec.shape(key, batch), styles, dtype)) for key in spec.entries}


@st.composite
def styled_state(draw, spec: StateSpec, batch: int, styles: Mapping[str, str], dtype=torch.float64) -> dict:
    """A state for ``spec`` with ``batch`` samples, entry ``k``'s numbers drawn in style ``styles[k]``."""
    return {key: draw(values_in(spec.shape(key, batch), styles[key], dtype)) for key in spec.entries}


def sizes(n: int, max_size: int = 4):
    """``n`` population sizes in ``1..max_size``."""
    return st.lists(st.integers(1, max_size), min_size=n, max_size=n)


@st.composite
def checkables(draw, factory, n: int, max_size: int = 4):
    """``factory(sizes)`` for drawn sizes."""
    return factory(draw(sizes(n, max_size)))


def special_counts(state: Mapping[str, torch.Tensor], dtype=None) -> dict:
    """Which special values a state holds, as 0/1 per kind: ``0.0``, ``-0.0``, ``tiny`` (nonzero, at most
    twice the tiny special of the dtype), ``large`` (at least the large special), ``ties`` (an entry holding
    one nonzero number twice). The checker sums these over its search (``Report.special_values``)."""
    out = {"0.0": 0, "-0.0": 0, "tiny": 0, "large": 0, "ties": 0}
    for v in state.values():
        if not v.is_floating_point() or not v.numel():
            continue
        tiny, large = special_values(dtype or v.dtype)[4], special_values(dtype or v.dtype)[6]
        a = v.detach().double()
        zero = a == 0
        out["0.0"] |= int(bool((zero & ~torch.signbit(a)).any()))
        out["-0.0"] |= int(bool((zero & torch.signbit(a)).any()))
        out["tiny"] |= int(bool(((a.abs() > 0) & (a.abs() <= 2 * tiny)).any()))  # 2: tiny rounded to a narrower dtype
        out["large"] |= int(bool((a.abs() >= large).any()))
        nonzero = a[~zero & torch.isfinite(a)]
        out["ties"] |= int(nonzero.unique().numel() < nonzero.numel())
    return out


def describe(state) -> str:
    """A drawn state written out in full (entry: nested list), so a failing example can be replayed
    (:func:`parse`); a dtype other than float64 is named after the values (``x = [[1.0]] (float32)``)."""
    def one(v):
        tail = "" if v.dtype == torch.float64 else f" ({str(v.dtype).split('.')[-1]})"
        return f"{v.tolist()}{tail}"
    return "; ".join(f"{k} = {one(v)}" for k, v in state.items())


def parse(text: str) -> dict:
    """The state :func:`describe` wrote (``"x = [[1.0]]; W = [[-0.0, 2.0]] (float32)"``), as tensors again."""
    import ast
    import re

    out = {}
    for key, body, dt in re.findall(r"(\w+) = (\[.*?\]|-?[\d.e+-]+|-?inf|nan)(?: \((\w+)\))?(?=; \w+ = |$)", text.strip()):
        dtype = getattr(torch, dt) if dt else torch.float64
        out[key] = torch.tensor(ast.literal_eval(body), dtype=torch.float64).to(dtype)
    return out
