"""The leaky integrate-and-fire (LIF) neuron, its parameters and its analytic firing rate.

    tau dv/dt = -v + R I(t),     v >= v_th  ->  spike, v <- v_reset = 0, held for t_ref

For a constant current with ``R I > v_th`` the time from reset to threshold is
``tau ln(R I / (R I - v_th))`` and the firing rate is

    f(I) = 1 / (t_ref + tau ln(R I / (R I - v_th)))          (0 when R I <= v_th)

(Lapicque 1907; Gerstner & Kistler 2002, Eq. 4.10). Both spiking simulators are tested against it.
Quantities here are plain SI floats (seconds, volts, ohms, amperes); the Brian2 simulator attaches
Brian2 units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._validate import check_float


@dataclass(frozen=True)
class LIFParams:
    """LIF parameters in SI units: ``tau`` (s), ``v_th`` (V), ``R`` (ohm), ``t_ref`` (s)."""

    tau: float = 20e-3
    v_th: float = 20e-3
    R: float = 1e8
    t_ref: float = 2e-3

    def __post_init__(self):
        check_float("LIFParams", "tau", self.tau, 0.0, low_open=True)
        check_float("LIFParams", "v_th", self.v_th, 0.0, low_open=True)
        check_float("LIFParams", "R", self.R, 0.0, low_open=True)
        check_float("LIFParams", "t_ref", self.t_ref, 0.0)


def lif_rate(I: float, p: LIFParams = LIFParams()) -> float:
    """Analytic firing rate (Hz) of a LIF cell driven by constant current ``I`` (A); see module doc."""
    drive = p.R * I
    if drive <= p.v_th:
        return 0.0
    return 1.0 / (p.t_ref + p.tau * math.log(drive / (drive - p.v_th)))
