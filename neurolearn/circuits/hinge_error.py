"""The excitatory/inhibitory threshold circuit that computes the contrastive hinge error (Tang et al. 2022, App. A).

Tang, Yang & Amit 2022 (Appendix A; METHODS.md 3.3 with ambiguity A2 resolved as one L1 summing
unit with two thresholds). For every top cell ``i``, with the anchor's representation held in a memory
unit ``M_i`` (:class:`~neurolearn.circuits.memory.ShortTermMemory`) and the current view's ``z_i``:

    u_i  = g z_i,   v_i = g M_i                    inhibitory copies (g = inhibition_gain, 1 when intact)
    D+_i = [M_i - u_i]_+,   D-_i = [z_i - v_i]_+     excitatory rectified difference units
    S    = sum_i (D+_i + D-_i)  = ||M - z||_1       one summing unit (the L1 distance of eq. 2)
    G+   = H(S - m1),   G- = H(m2 - S)              threshold units (H(0) = 0: strict, as the 1[.] of eqs. 4-6)
    sign_i = H(D+_i) - H(D-_i) = sgn(M_i - z_i)     (graded: D+_i - D-_i = M_i - z_i)
    positive phase:  gate = G+,  delta_i = -G+ sign_i                  (eq. 5: delta^B)
    negative phase:  gate = G-,  delta_i = +w_neg G- sign_i            (eq. 6: delta^B_t, w_neg = 1 or 1/K)

``delta`` is ``dL/dz`` of the hinge loss of this one presentation, ``[S - m1]_+`` (positive) or
``w_neg [m2 - S]_+`` (negative), with ``M`` held constant (the gradient block of eq. 7). The circuit
delivers two things to the top cells: the gate, one scalar per presentation (a ``global_scalar``
in a locality contract), and ``sign_i``, one value per cell (a ``neuron_signal`` through the pathway
``"hinge error"``); the memory is a trace of the top cells (:func:`hinge_circuit_checkable`).

``inhibition_gain`` is a fault-injection parameter: with ``g != 1`` the inhibitory copies are wrong
and ``S`` is no longer the L1 distance (tests use it as the planted fault). The spiking realisation
(LIF-like units, rectification by the firing threshold) is :mod:`neurolearn.sim.brian2_hinge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._validate import ParameterError, check_choice, check_float
from ..describe import Description, param, register

PATHWAY = "hinge error"
GATE = "hinge gate"
PHASES = ("positive", "negative")


@dataclass
class HingeSignals:
    """What :class:`HingeError` computes for a batch of presentations (each row one anchor).

    ``delta`` ``(batch, n)``: the per-cell error; ``gate`` ``(batch,)``: G+ (positive phase) or G-
    (negative), 0 or 1; ``S`` ``(batch,)``: the summing unit; ``loss`` ``(batch,)``: this presentation's
    hinge term; ``units``: every unit's activity by name (``M``, ``z``, ``u``, ``v``, ``D_plus``,
    ``D_minus``, ``S``, ``G_pos``, ``G_neg``, ``sign``, ``delta``) for plotting.
    """

    delta: torch.Tensor
    gate: torch.Tensor
    S: torch.Tensor
    loss: torch.Tensor
    units: dict = field(default_factory=dict)


@register("circuit", "hinge_error")
@dataclass(frozen=True)
class HingeError(Description):
    """The hinge error circuit in rate form (module docstring; Tang et al. 2022 eqs. 4-6 and Appendix A)."""

    m1: float = param(1.0, low=0.0, help="positive margin: the positive pair is pulled while ||M - z||_1 > m1")
    m2: float = param(1.5, low=0.0, help="negative margin: a negative is pushed while ||M - z||_1 < m2 (Table 4; CIFAR: 3)")
    graded: bool = param(False, help="sign_i = D+_i - D-_i (graded) instead of H(D+_i) - H(D-_i) (eqs. 4-6)")
    inhibition_gain: float = param(1.0, low=0.0,
                                   help="gain g of the inhibitory copies u = g z, v = g M (fault injection; 1 = intact)")

    def __call__(self, memory: torch.Tensor, current: torch.Tensor, phase: str, w_neg: float = 1.0) -> HingeSignals:
        """Run the circuit on ``memory`` ``M`` and ``current`` ``z`` (both ``(batch, n)`` or ``(n,)``) in
        ``phase`` (``"positive"`` or ``"negative"``); ``w_neg`` weighs a negative's error (1, or the code's
        1/K). Returns :class:`HingeSignals` (equations in the module docstring)."""
        check_choice("HingeError", "phase", phase, PHASES)
        w_neg = check_float("HingeError", "w_neg", w_neg, 0.0)
        if not isinstance(memory, torch.Tensor) or not isinstance(current, torch.Tensor):
            raise ParameterError("HingeError: memory and current must be tensors")
        if memory.shape != current.shape or memory.ndim not in (1, 2) or memory.shape[-1] < 1:
            raise ParameterError(f"HingeError: memory and current must have the same shape (batch, n) or (n,), "
                                 f"got {tuple(memory.shape)} and {tuple(current.shape)}")
        for name, t in (("memory", memory), ("current", current)):
            if not bool(torch.isfinite(t).all()):
                raise ParameterError(f"HingeError: {name} must be finite")
        single = memory.ndim == 1
        sig = self.run(memory[None] if single else memory, current[None] if single else current, phase, w_neg)
        if single:
            return HingeSignals(sig.delta[0], sig.gate[0], sig.S[0], sig.loss[0], {k: t[0] for k, t in sig.units.items()})
        return sig

    def run(self, M: torch.Tensor, z: torch.Tensor, phase: str, w_neg: float = 1.0) -> HingeSignals:
        """The circuit's equations (module docstring) on ``(batch, n)`` tensors ``M``, ``z`` without checking its
        inputs: for a caller that has checked them once (e.g. for every presentation of a batch,
        :func:`neurolearn.objectives.contrastive.circuit_hinge_errors`); ``__call__`` checks, then runs this."""
        g = self.inhibition_gain
        u, v = g * z, g * M                                   # inhibitory copies
        d_plus, d_minus = torch.relu(M - u), torch.relu(z - v)  # rectified difference units
        S = (d_plus + d_minus).sum(-1)                        # summing unit: ||M - z||_1
        g_pos = (S > self.m1).to(M.dtype)                     # H(S - m1)
        g_neg = (S < self.m2).to(M.dtype)                     # H(m2 - S)
        if self.graded:
            sign = d_plus - d_minus
        else:
            sign = (d_plus > 0).to(M.dtype) - (d_minus > 0).to(M.dtype)
        if phase == "positive":
            gate, delta, loss = g_pos, -g_pos[:, None] * sign, torch.relu(S - self.m1)
        else:
            gate, delta, loss = g_neg, w_neg * g_neg[:, None] * sign, w_neg * torch.relu(self.m2 - S)
        units = {"M": M, "z": z, "u": u, "v": v, "D_plus": d_plus, "D_minus": d_minus, "S": S,
                 "G_pos": g_pos, "G_neg": g_neg, "sign": sign, "delta": delta}
        return HingeSignals(delta, gate, S, loss, units)


def default_hinge_error() -> HingeError:
    """The :class:`HingeError` of the parameter set ``circuits/hinge_error.toml`` (its top-level keys; the
    ``[spiking]`` table is the Brian2 realisation's)."""
    from . import circuit_params

    params = {k: v for k, v in circuit_params("hinge_error").items() if not isinstance(v, dict)}
    return HingeError.from_values(params)


# ----------------------------------------------------------------------------- locality
def hinge_circuit_checkable(n_pre: int, n_top: int, gate: str = "circuit", m1: float = 1.0):
    """The top-layer update of one presentation as the circuits deliver it (METHODS.md section 8, first row).

    One presentation per sample (the positive or a negative of some anchor): presynaptic activities
    ``x`` (cells of ``p0``), current top activities ``z`` (``p1``), the memory ``M`` (a :class:`Trace` of
    the top cells: the short-term memory), the circuit's per-cell ``sign`` (a :class:`Signal` through the
    pathway ``"hinge error"``: ``H(D+_i) - H(D-_i)``) and its signed gate ``c_b`` (``-G+`` on a positive,
    ``+w_neg G-`` on a negative: a :class:`SampleScalar`, one number per presentation). The update is
    eq. 7 for one presentation, ``dW = -sum_b (c_b sign_b)^T x_b``. ``gate``:

    * ``"circuit"``: gate and sign as the circuit delivers them -- local;
    * ``"inside"``: the same update with the gate computed inside the rule from every top cell and the
      memory, ``c_b = -H(sum_k |M_bk - z_bk| - m1)``, no circuit declared -- non-local (depends on other
      cells of the layer).

    (The hinge objective's own checks, with the sign computed from the memory trace, are
    :func:`neurolearn.objectives.contrastive.hinge_top_checkable`.)
    """
    from ..locality.contract import Cells, Checkable, Contract, Layer, SampleScalar, Signal, StateSpec, Trace

    check_choice("hinge_circuit_checkable", "gate", gate, ("circuit", "inside"))
    entries = {"x": Cells("p0"), "z": Cells("p1"), "M": Trace("p1"), "sign": Signal("p1", PATHWAY)}
    if gate == "circuit":
        entries["gate"] = SampleScalar(GATE)
    spec = StateSpec({"p0": n_pre, "p1": n_top}, (Layer("W", post="p1", pre="p0"),), entries)
    contract = Contract("hinge top layer", allows={"pre", "post", "trace", "neuron_signal", "global_scalar"},
                        pathways=(PATHWAY,))

    def fn(s):
        if gate == "circuit":
            c = s["gate"]
        else:
            c = -((s["M"] - s["z"]).abs().sum(-1) > m1).to(s["z"].dtype)
        return {"W": -(c[:, None] * s["sign"]).T @ s["x"]}

    name = "Hinge circuit top (gate " + ("from circuit)" if gate == "circuit" else "in rule)")
    return Checkable(name, spec, {"W": contract}, fn)


def _circuit_gate(s):
    return hinge_circuit_checkable(s[0], s[1], "circuit")


def _inside_gate(s):
    return hinge_circuit_checkable(s[0], s[1], "inside")


def _register_checks() -> None:
    from ..locality.catalog import register_check

    register_check(_circuit_gate, 2, True, label="hinge circuit: gate and sign delivered")
    register_check(_inside_gate, 2, False, {"depends on other cells of the layer"},
                   label="hinge circuit: gate computed in the rule")


_register_checks()
