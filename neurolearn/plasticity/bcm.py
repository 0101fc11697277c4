"""The BCM rule with a sliding threshold (Bienenstock, Cooper & Munro 1982; Intrator & Cooper 1992 form),
written once as synaptic equations.

Rate form (the rate limit derived by :mod:`neurolearn.plasticity.equations`; batch = sum of samples):

    dW_ij   = eta sum_b x_bj y_bi (y_bi - theta_bi)
    dtheta_i = (y_i^2 - theta_i) / (rate_max tau_theta)        per window 1 / rate_max

Potentiation when the post cell fires above its threshold ``theta``, depression below; the threshold
is a slow per-cell trace of ``y^2`` (time constant ``tau_theta``), so it slides up with sustained
activity and stabilises the rule. Spiking form: traces ``apre``, ``apost`` (``+= 1``, decay
``tau_pre``, ``tau_post``) estimate the rates; at each post spike

    w     += eta apre / (rate_max tau_pre) (apost / (rate_max tau_post) - theta)
    theta += apost / (rate_max tau_post) / (rate_max tau_theta)

before ``apost`` counts the spike; ``theta`` decays with ``tau_theta`` (event-driven). ``theta`` depends
on the post cell's spikes only: every synapse of a post cell holds the same value (a per-cell trace);
in the torch update it is an input (``theta``, (batch, n_post)) and :meth:`BCM.torch_traces` gives its
change. Locality (derived): pre, post, trace, weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..describe import Description, param, register
from .equations import EquationRule, RuleEquations

EQUATIONS = RuleEquations(
    "BCM",
    model=("w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)\ndapost/dt = -apost / tau_post : 1 (event-driven)\n"
           "dtheta/dt = -theta / tau_theta : 1 (event-driven)"),
    on_pre="apre += 1",
    on_post=("w += eta * apre / (rate_max * tau_pre) * (apost / (rate_max * tau_post) - theta)\n"
             "theta += apost / (rate_max * tau_post) / (rate_max * tau_theta)\n"
             "apost += 1"),
    slow=("theta",),
    reference="Bienenstock, Cooper & Munro 1982, J. Neurosci. 2:32; Intrator & Cooper 1992",
)


@register("rule", "bcm")
@dataclass(frozen=True)
class BCM(EquationRule, Description):
    """BCM (module docstring): ``eta`` learning rate, ``tau_theta`` (s) threshold time constant; spiking
    form: ``rate_max`` (Hz), ``tau_pre`` / ``tau_post`` (s)."""

    eta: float = param(0.01, low=0.0, low_open=True, help="learning rate (weight change per post spike)")
    tau_theta: float = param(10.0, low=0.0, low_open=True, help="sliding threshold time constant (s)")
    rate_max: float = param(100.0, low=0.0, low_open=True, help="rate of activity 1 (Hz)")
    tau_pre: float = param(0.02, low=0.0, low_open=True, help="presynaptic trace time constant (s)")
    tau_post: float = param(0.02, low=0.0, low_open=True, help="postsynaptic trace time constant (s)")

    EQUATIONS = EQUATIONS

    UNITS = {"tau_theta": "second", "rate_max": "Hz", "tau_pre": "second", "tau_post": "second"}

    def torch_update(self, pre: torch.Tensor, post: torch.Tensor, W: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``dW = eta sum_b x_b y_b (y_b - theta_b)`` with ``theta`` (batch, n_post) the sliding thresholds."""
        return self.compiled.torch_update(pre, post, W, theta=theta)

    def torch_traces(self, post: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The threshold's change per window, ``(y^2 - theta) / (rate_max tau_theta)``, (batch, n_post)."""
        n = post.shape[1] if isinstance(post, torch.Tensor) and post.ndim == 2 else 1
        W = torch.zeros(n, 1, dtype=post.dtype if isinstance(post, torch.Tensor) else torch.float64)
        return self.compiled.torch_traces(None, post, W, theta=theta)["theta"]
