"""kWTA Hebbian learning with homeostatic thresholds: one rule, a torch update and Brian2 equations.

Rate form (competitive "instar" learning; Grossberg 1976, Rumelhart & Zipser 1985; the rate limit of
the spiking rule below):

    d = kWTA(W x - theta, k)                              winners of the competition (KWTA circuit)
    dW_ij = eta d_i (c x_j - W_ij)                        Hebbian for active inputs, heterosynaptic
                                                          depression (anti-Hebbian) for silent ones
    theta_i <- theta_i + theta_plus d_i - theta_i / tau_theta   adaptive threshold (homeostasis)

Spiking form (Brian2 ``Synapses``; Diehl & Cook 2015 style traces): each input spike raises a
presynaptic trace ``apre`` (decay ``tau_pre``); each postsynaptic spike moves the weight toward it,

    model:   w : 1;  dapre/dt = -apre / tau_pre (event-driven)
    on_pre:  apre += 1
    on_post: w = clip(w + eta (c apre / (rate_max tau_pre) - w), 0, w_max),   w_max = c

With Poisson input of rate ``r_j = x_j rate_max`` the mean trace is ``r_j tau_pre = x_j rate_max tau_pre``,
so per postsynaptic spike the expected change is ``eta (c x_j - w)``: the rate rule with ``d_i`` the
postsynaptic spike count, whose fixed point ``w = c x`` lies in ``[0, c]`` (the clip keeps the noisy
trace from leaving it). The threshold of the postsynaptic cell adapts as in the rate form: it rises by
``theta_plus`` (in units of the firing threshold) per postsynaptic spike and decays with time constant
``tau_theta x presentation`` seconds (``tau_theta`` presentations). Locality: pre (trace), post (spike)
and the weight itself. :meth:`KWTAHebbian.brian2_equations` returns these strings and the namespace,
with Brian2 units, of every parameter they name (``k`` included, as ``k_winners``, for the circuit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_float
from ..describe import Description, param, register
from ..locality.contract import (
    Cells,
    Checkable,
    Contract,
    Layer,
    Signal,
    StateSpec,
    Weight,
)

SYNAPSE_MODEL = "w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)"
ON_PRE = "apre += 1"
ON_POST = "w = clip(w + eta * (c * apre / (rate_max * tau_pre) - w), 0, w_max)"

CONTRACT = Contract("KWTAHebbian", allows={"pre", "post", "trace", "weight", "neuron_signal"}, pathways=("KWTA",))


@register("rule", "kwta_hebbian")
@dataclass(frozen=True)
class KWTAHebbian(Description):
    """The rule of the module docstring: ``eta`` learning rate, ``k`` winners, ``c`` input gain,
    ``theta_plus`` threshold increment per win, ``tau_theta`` threshold decay (in presentations)."""

    eta: float = param(0.05, low=0.0, high=1.0, low_open=True, help="learning rate")
    k: int = param(1, low=1, help="winners of the competition")
    c: float = param(1.0, low=0.0, low_open=True, help="input gain: weights approach c x")
    theta_plus: float = param(0.05, low=0.0, help="threshold increment per win")
    tau_theta: float = param(200.0, low=0.0, low_open=True, help="threshold decay time, in presentations")

    contract = CONTRACT

    def torch_update(self, x: torch.Tensor, d: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``dW = eta sum_b d_bi (c x_bj - W_ij)`` (pure; batch = sum of per-sample updates)."""
        return self.eta * (d.T @ (self.c * x) - d.sum(0)[:, None] * W)

    def checkable(self, n_pre: int, n_post: int) -> Checkable:
        """:meth:`torch_update` as a checkable update: ``x`` (pre cells), the winners ``d`` delivered to
        each output cell by the KWTA circuit (pathway ``"KWTA"``) and the weights ``W``; the change of
        ``W_ij`` reads ``x_j``, ``d_i`` and ``W_ij`` only (sign: ``dW``, not a gradient)."""
        spec = StateSpec({"input": n_pre, "output": n_post}, (Layer("W", post="output", pre="input"),),
                         {"x": Cells("input"), "d": Signal("output", "KWTA"), "W": Weight("W")})
        return Checkable("KWTAHebbian", spec, {"W": self.contract},
                         lambda s: {"W": self.torch_update(s["x"], s["d"], s["W"])})

    def brian2_equations(self, rate_max: float = 200.0, tau_pre: float = 0.02, presentation: float = 0.07) -> dict:
        """The spiking form (module docstring) for a Brian2 ``Synapses``: ``model``, ``on_pre``, ``on_post``
        strings and their ``namespace`` (values with Brian2 units).

        ``rate_max`` (Hz): input rate of a pixel of value 1; ``tau_pre`` (s): presynaptic trace time
        constant; ``presentation`` (s): time per presented sample, which turns ``tau_theta`` (presentations)
        into seconds. The namespace holds every parameter of the rule: ``eta``, ``c`` (and ``w_max = c``),
        ``theta_plus``, ``tau_theta`` (s), ``k_winners`` (= ``k``), and ``rate_max``, ``tau_pre``. The
        adaptive threshold (``theta_plus``, ``tau_theta``) and ``k_winners`` are read by the postsynaptic
        circuit (:func:`neurolearn.sim.brian2_kwta.build_kwta_circuit`).
        """
        from ..sim.brian2_kwta import quiet_brian2

        check_float("KWTAHebbian.brian2_equations", "rate_max", rate_max, 0.0, low_open=True)
        check_float("KWTAHebbian.brian2_equations", "tau_pre", tau_pre, 0.0, low_open=True)
        check_float("KWTAHebbian.brian2_equations", "presentation", presentation, 0.0, low_open=True)
        b2 = quiet_brian2()
        namespace = {"eta": self.eta, "c": self.c, "w_max": self.c, "theta_plus": self.theta_plus,
                     "tau_theta": self.tau_theta * presentation * b2.second, "k_winners": self.k,
                     "rate_max": rate_max * b2.Hz, "tau_pre": tau_pre * b2.second}
        return {"model": SYNAPSE_MODEL, "on_pre": ON_PRE, "on_post": ON_POST, "namespace": namespace}

    def train_rate(self, x: torch.Tensor, n_out: int, epochs: int = 1, seed: int = 0) -> tuple:
        """Train the rate version sample by sample on ``x`` (N, D); returns ``(W, theta)``."""
        g = torch.Generator().manual_seed(seed)
        W = torch.rand(n_out, x.shape[1], generator=g) * 0.3
        theta = torch.zeros(n_out)
        for _ in range(epochs):
            for xi in x[torch.randperm(x.shape[0], generator=g)]:
                u = W @ xi - theta
                d = torch.zeros(n_out)
                d[torch.topk(u, self.k).indices] = 1.0
                W += self.torch_update(xi[None], d[None], W)
                theta += self.theta_plus * d - theta / self.tau_theta
        return W, theta
