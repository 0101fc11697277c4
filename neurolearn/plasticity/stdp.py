"""Pair-based STDP with all-to-all traces (Song, Miller & Abbott 2000; Morrison, Diesmann & Gerstner 2008),
written once as synaptic equations.

Spiking form: a presynaptic trace ``apre`` and a postsynaptic trace ``apost`` (``+= 1`` per spike,
decay ``tau_plus``, ``tau_minus``); a pre spike depresses by ``A_minus apost`` (post before pre), a post
spike potentiates by ``A_plus apre`` (pre before post), each clipped to ``[0, w_max]``:

    on_pre:  w = clip(w - A_minus apost, 0, w_max);  apre += 1
    on_post: w = clip(w + A_plus apre, 0, w_max);    apost += 1

Rate limit (independent Poisson trains at ``x rate_max`` and ``y rate_max``, derived by
:mod:`neurolearn.plasticity.equations`; Kempter, Gerstner & van Hemmen 1999): per window ``1 / rate_max``

    dW_ij = rate_max (A_plus tau_plus - A_minus tau_minus) sum_b y_bi x_bj

Hebbian when the potentiation window's area ``A_plus tau_plus`` exceeds the depression's, anti-Hebbian
otherwise (Song et al.'s ``A_minus tau_minus > A_plus tau_plus`` makes uncorrelated input depress).
Locality (derived): pre, post, trace, weight (the clip reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..describe import Description, param, register
from .equations import EquationRule, RuleEquations

EQUATIONS = RuleEquations(
    "STDP",
    model="w : 1\ndapre/dt = -apre / tau_plus : 1 (event-driven)\ndapost/dt = -apost / tau_minus : 1 (event-driven)",
    on_pre="w -= A_minus * apost\napre += 1",
    on_post="w += A_plus * apre\napost += 1",
    bounds=("0", "w_max"),
    reference="Song, Miller & Abbott 2000, Nat. Neurosci. 3:919; Morrison, Diesmann & Gerstner 2008, Biol. Cybern. 98:459",
)


@register("rule", "stdp")
@dataclass(frozen=True)
class STDP(EquationRule, Description):
    """Pair-based STDP (module docstring): amplitudes ``A_plus``, ``A_minus``, windows ``tau_plus``,
    ``tau_minus`` (s), bound ``w_max``, ``rate_max`` (Hz) the rate of activity 1."""

    A_plus: float = param(0.01, low=0.0, help="potentiation per pre-before-post pair")
    A_minus: float = param(0.0105, low=0.0, help="depression per post-before-pre pair")
    tau_plus: float = param(0.02, low=0.0, low_open=True, help="potentiation window (s)")
    tau_minus: float = param(0.02, low=0.0, low_open=True, help="depression window (s)")
    w_max: float = param(1.0, low=0.0, low_open=True, help="upper weight bound")
    rate_max: float = param(100.0, low=0.0, low_open=True, help="rate of activity 1 (Hz)")

    EQUATIONS = EQUATIONS

    UNITS = {"tau_plus": "second", "tau_minus": "second", "rate_max": "Hz"}
