"""Short-term memory of the anchor's representation (Tang, Yang & Amit 2022, Section 3.1 and Fig. 3).

In the sequential ("biological") form of the contrastive hinge objective the anchor view A is shown
first and its top-layer representation ``z^A`` is kept in *separate* memory units ``M_i`` (unit ``i``
itself later carries the error), held while the positive view B and the ``K`` negatives are shown,
then cleared for the next anchor (METHODS.md 3.2). Without the gradient block the anchor's presynaptic
activities ``x^A_{L-1}`` must be kept too (paper, text after eq. 7); ``store_pre=True`` keeps them.

Rate realisation (this module): each memory unit is a leaky unit with recurrent self-excitation of
weight ``w`` (``recurrence``); with intrinsic time constant ``tau`` (``retention``, in presentations),

    tau dM/dt = -M + w M            =>   M(t + 1) = M(t) exp(-(1 - w) / tau)      (per presentation)

``w = 1`` is persistent activity (a line attractor: the pattern is held exactly, the paper's
assumption); ``w = 0`` is no refresh, and the stored pattern decays with ``tau``; in between the
effective retention time is ``tau / (1 - w)`` presentations. Writing sets ``M = z^A`` (the anchor
phase's input drives the units to the pattern), ``reset`` sets ``M = 0``. The spiking realisation
(persistent activity of a recurrent excitatory population, with the same two parameters) is
:mod:`neurolearn.sim.brian2_memory`.

State is explicit: :meth:`ShortTermMemory.init_state` returns a dict of tensors batched over
independent anchors (``M``: ``(batch, n)``, ``pre``: ``(batch, n_pre)`` or ``None``, ``written``:
``(batch,)`` bool), and every operation returns a new state (nothing is stored in the description).
In a locality contract the memory is a :class:`~neurolearn.locality.contract.Trace` of the top cells
(pathway ``"short-term memory"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validate import ParameterError
from ..describe import Description, param, register

PATHWAY = "short-term memory"


@register("circuit", "short_term_memory")
@dataclass(frozen=True)
class ShortTermMemory(Description):
    """Memory units ``M_i`` that hold the anchor's representation (module docstring).

    Per presentation without new input ``M <- M exp(-(1 - recurrence) / retention)`` (Tang et al.
    2022, Section 3.1: "retained in short term memory"; leaky unit with self-excitation). The default
    ``recurrence = 1`` holds the pattern exactly, as the paper's batched equations assume.
    """

    retention: float = param(0.5, low=0.0, low_open=True,
                             help="intrinsic time constant of a memory unit, in presentations (decay without refresh)")
    recurrence: float = param(1.0, low=0.0, high=1.0,
                              help="recurrent self-excitation w: 1 holds the pattern (persistent activity), 0 lets it decay")
    store_pre: bool = param(False, help="also keep the anchor's presynaptic activities (no gradient block, eq. 3)")

    # ------------------------------------------------------------------ retention
    def decay_factor(self, presentations: float = 1.0) -> float:
        """``exp(-(1 - w) p / tau)``: what is left of a stored pattern after ``p`` presentations."""
        p = float(presentations)
        if not math.isfinite(p) or p < 0:
            raise ParameterError(f"ShortTermMemory: presentations must be a finite number >= 0, got {presentations!r}")
        return math.exp(-(1.0 - self.recurrence) * p / self.retention)

    def effective_retention(self) -> float:
        """``tau / (1 - w)`` presentations (``inf`` for ``w = 1``: persistent activity)."""
        return math.inf if self.recurrence >= 1.0 else self.retention / (1.0 - self.recurrence)

    def holds(self, presentations: float, tolerance: float = 0.05) -> bool:
        """Whether a stored pattern keeps at least ``1 - tolerance`` of itself over ``presentations``
        (the ``1 + K`` presentations of one anchor's sequence)."""
        if not 0.0 <= tolerance < 1.0:
            raise ParameterError(f"ShortTermMemory: tolerance must be a number in [0, 1), got {tolerance!r}")
        return self.decay_factor(presentations) >= 1.0 - tolerance

    # ------------------------------------------------------------------ state
    def init_state(self, batch: int, n: int, n_pre: int | None = None, dtype=torch.float32, device=None) -> dict:
        """Empty memory for ``batch`` independent anchors of ``n`` top cells (and ``n_pre`` presynaptic
        cells when ``store_pre``): ``{"M": zeros(batch, n), "pre": zeros(batch, n_pre) | None,
        "written": zeros(batch, bool)}``."""
        for name, v in (("batch", batch), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"ShortTermMemory.init_state: {name} must be an integer >= 1, got {v!r}")
        if self.store_pre and (isinstance(n_pre, bool) or not isinstance(n_pre, int) or n_pre < 1):
            raise ParameterError(f"ShortTermMemory.init_state: n_pre must be an integer >= 1 with store_pre=True, got {n_pre!r}")
        pre = torch.zeros(batch, n_pre, dtype=dtype, device=device) if self.store_pre else None
        return {"M": torch.zeros(batch, n, dtype=dtype, device=device), "pre": pre,
                "written": torch.zeros(batch, dtype=torch.bool, device=device)}

    def write(self, state: dict, z: torch.Tensor, pre: torch.Tensor | None = None) -> dict:
        """Anchor phase: ``M = z^A`` (detached: the memory is activity, not a path for gradients) and,
        with ``store_pre``, ``pre = x^A_{L-1}``. Returns the new state."""
        M = state["M"]
        if z.shape != M.shape:
            raise ParameterError(f"ShortTermMemory.write: z must have shape {tuple(M.shape)}, got {tuple(z.shape)}")
        new_pre = state["pre"]
        if self.store_pre:
            if pre is None or pre.shape != state["pre"].shape:
                got = None if pre is None else tuple(pre.shape)
                raise ParameterError(f"ShortTermMemory.write: pre must have shape {tuple(state['pre'].shape)} "
                                     f"with store_pre=True, got {got}")
            new_pre = pre.detach().clone().to(state["pre"].dtype)
        return {"M": z.detach().clone().to(M.dtype), "pre": new_pre,
                "written": torch.ones_like(state["written"])}

    def step(self, state: dict, presentations: float = 1.0) -> dict:
        """Time passes (one presentation by default): ``M <- M exp(-(1 - w) p / tau)`` (and the kept
        presynaptic activities likewise)."""
        f = self.decay_factor(presentations)
        pre = None if state["pre"] is None else state["pre"] * f
        return {"M": state["M"] * f, "pre": pre, "written": state["written"]}

    def read(self, state: dict) -> torch.Tensor:
        """The memory units' activities ``M`` (``(batch, n)``); reading an unwritten memory is an error."""
        if not bool(state["written"].all()):
            raise ParameterError("ShortTermMemory.read: the memory holds no pattern (write the anchor first)")
        return state["M"]

    def reset(self, state: dict) -> dict:
        """End of an anchor's sequence: ``M = 0`` (and ``pre = 0``), nothing written."""
        pre = None if state["pre"] is None else torch.zeros_like(state["pre"])
        return {"M": torch.zeros_like(state["M"]), "pre": pre, "written": torch.zeros_like(state["written"])}


def default_memory() -> ShortTermMemory:
    """The :class:`ShortTermMemory` of the parameter set ``circuits/short_term_memory.toml`` (its top-level
    keys; the ``[spiking]`` table is the Brian2 realisation's)."""
    from . import circuit_params

    params = {k: v for k, v in circuit_params("short_term_memory").items() if not isinstance(v, dict)}
    return ShortTermMemory.from_values(params)
