"""Oja's rule (Oja 1982), written once as synaptic equations.

Rate form (the rate limit derived by :mod:`neurolearn.plasticity.equations`; batch = sum of samples):

    dW_ij = eta sum_b y_bi (x_bj - y_bi W_ij)

Hebbian growth ``y x`` with a decay ``y^2 W`` that normalises the weight vector of each post cell
(its length tends to 1; the weights to the first principal component of the inputs). Spiking form:
pre and post traces ``apre``, ``apost`` (``+= 1`` per spike, decay ``tau_pre``, ``tau_post``) estimate
the two rates, ``apre / (rate_max tau_pre) ~ x``; at each post spike (rate ``y rate_max``)

    w += eta (apre / (rate_max tau_pre) - w apost / (rate_max tau_post))

before ``apost`` counts the spike, so per window ``1 / rate_max`` the expected change is the rate form.
Locality (derived): pre, post, trace, weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..describe import Description, param, register
from .equations import EquationRule, RuleEquations

EQUATIONS = RuleEquations(
    "Oja",
    model="w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)\ndapost/dt = -apost / tau_post : 1 (event-driven)",
    on_pre="apre += 1",
    on_post="w += eta * (apre / (rate_max * tau_pre) - w * apost / (rate_max * tau_post))\napost += 1",
    reference="Oja 1982, J. Math. Biol. 15:267",
)


@register("rule", "oja")
@dataclass(frozen=True)
class Oja(EquationRule, Description):
    """Oja's rule (module docstring): ``eta`` learning rate; spiking form: ``rate_max`` (Hz) rate of
    activity 1, ``tau_pre`` / ``tau_post`` (s) trace time constants."""

    eta: float = param(0.01, low=0.0, low_open=True, help="learning rate (weight change per post spike)")
    rate_max: float = param(100.0, low=0.0, low_open=True, help="rate of activity 1 (Hz)")
    tau_pre: float = param(0.02, low=0.0, low_open=True, help="presynaptic trace time constant (s)")
    tau_post: float = param(0.02, low=0.0, low_open=True, help="postsynaptic trace time constant (s)")

    EQUATIONS = EQUATIONS

    UNITS = {"rate_max": "Hz", "tau_pre": "second", "tau_post": "second"}
