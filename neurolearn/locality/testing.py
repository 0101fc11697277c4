"""Pytest helpers for checking your own rules: ``assert_local``, ``assert_nonlocal``, ``single_layer``.

    from neurolearn.locality import Contract, single_layer, assert_local

    def oja(s):                      # dW_ij = y_i (x_j - y_i W_ij), summed over samples (Oja 1982)
        x, y, W = s["pre"], s["post"], s["W"]
        return (y.T @ x) - (y * y).sum(0)[:, None] * W

    rule = single_layer(oja, Contract("Oja", allows={"pre", "post", "weight"}), n_pre=3, n_post=2)
    assert_local(rule)
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch

from .checker import Report, check
from .._validate import ParameterError
from .contract import Cells, Checkable, Contract, Layer, SampleScalar, Scalar, Signal, StateSpec, Trace, Weight


def single_layer(
    fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    contract: Contract,
    n_pre: int = 3,
    n_post: int = 2,
    signals: Mapping[str, str] | None = None,
    traces: Iterable[str] = (),
    scalars: Iterable[str] = (),
    name: str | None = None,
    sample_scalars: Iterable[str] = (),
    time: int | None = None,
) -> Checkable:
    """A one-layer :class:`Checkable` from a plain function ``state -> dW (n_post, n_pre)``.

    The state holds ``pre`` ``(batch, n_pre)``, ``post`` ``(batch, n_post)``, ``W`` ``(n_post, n_pre)``,
    one ``(batch, n_post)`` entry per name in ``signals`` (name -> pathway), ``trace_pre`` /
    ``trace_post`` if listed in ``traces``, one ``()`` scalar per name in ``scalars`` and one
    ``(batch,)`` per-sample scalar (a reward per trial) per name in ``sample_scalars``. With ``time=T``
    every per-sample entry gains a time axis (``(batch, T, n)``, ``(batch, T)``) and ``fn`` returns the
    change at every step, ``(T, n_post, n_pre)``: ``dW[t]`` may read steps ``<= t`` only.
    """
    entries = {"pre": Cells("pre"), "post": Cells("post"), "W": Weight("W")}
    for key, pathway in (signals or {}).items():
        entries[key] = Signal("post", pathway)
    for key in traces:
        if key not in ("trace_pre", "trace_post"):
            raise ValueError(f"single_layer: traces must be 'trace_pre' and/or 'trace_post', got {key!r}")
        entries[key] = Trace("pre" if key == "trace_pre" else "post")
    for key in scalars:
        entries[key] = Scalar(key)
    for key in sample_scalars:
        if key in entries:
            raise ParameterError(f"single_layer: sample scalar {key!r} clashes with an entry of the same name")
        entries[key] = SampleScalar(key)
    spec = StateSpec({"pre": n_pre, "post": n_post}, (Layer("W", "post", "pre"),), entries, time=time)
    return Checkable(name or getattr(fn, "__name__", "rule"), spec, {"W": contract}, lambda s: {"W": fn(s)})


def assert_local(target, **kw) -> Report:
    """Raise ``AssertionError`` with the report if ``target`` violates its contract; return the report."""
    report = check(target, **kw)
    if not report.local:
        raise AssertionError("expected a local update, found:\n" + str(report))
    return report


def assert_nonlocal(target, kinds: Iterable[str] = (), **kw) -> Report:
    """Raise ``AssertionError`` unless ``target`` violates its contract (with every kind in ``kinds``)."""
    report = check(target, **kw)
    if report.local:
        raise AssertionError("expected a non-local update, but the checker found no violation:\n" + str(report))
    missing = set(kinds) - report.kinds
    if missing:
        raise AssertionError(f"expected violations of kinds {sorted(missing)}; found:\n" + str(report))
    return report
