"""kWTA Hebbian learning with homeostatic thresholds: one rule, a torch update and Brian2 equations.

Rate form (competitive "instar" learning; Grossberg 1976, Rumelhart & Zipser 1985; the rate limit of
the spiking rule below):

    d = kWTA(W x - theta, k)                              winners of the competition (KWTA circuit)
    dW_ij = eta d_i (c x_j - W_ij)                        Hebbian for active inputs, heterosynaptic
                                                          depression (anti-Hebbian) for silent ones
    theta_i <- theta_i + theta_plus d_i - theta_i / tau_theta   adaptive threshold (homeostasis)

Spiking form (Brian2 ``Synapses``; Diehl & Cook 2015 style traces): each input spike raises a
presynaptic trace ``apre`` (decay ``tau_pre``); each postsynaptic spike moves the weight toward it,

    model:   dapre/dt = -apre / tau_pre (event-driven)
    on_pre:  apre += 1; v_post += w
    on_post: w = clip(w + eta_s (apre / (rate_max tau_pre) - w), 0, w_max)

With Poisson input of rate ``r_j = x_j rate_max`` the mean trace is ``r_j tau_pre = x_j rate_max tau_pre``,
so per postsynaptic spike the expected change is ``eta_s (x_j - w)``: the rate rule with ``c = 1``
and ``d_i`` the postsynaptic spike count. Locality: pre (trace), post (spike) and the weight itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_float, check_int
from ..locality.contract import Cells, Checkable, Contract, Layer, Signal, StateSpec, Weight

CONTRACT = Contract("KWTAHebbian", allows={"pre", "post", "trace", "weight", "neuron_signal"}, pathways=("KWTA",))


@dataclass(frozen=True)
class KWTAHebbian:
    """The rule of the module docstring: ``eta`` learning rate, ``k`` winners, ``c`` input gain,
    ``theta_plus`` threshold increment per win, ``tau_theta`` threshold decay (in presentations)."""

    eta: float = 0.05
    k: int = 1
    c: float = 1.0
    theta_plus: float = 0.05
    tau_theta: float = 200.0

    contract = CONTRACT

    def __post_init__(self):
        check_float("KWTAHebbian", "eta", self.eta, 0.0, 1.0, low_open=True)
        check_int("KWTAHebbian", "k", self.k, 1)
        check_float("KWTAHebbian", "c", self.c, 0.0, low_open=True)
        check_float("KWTAHebbian", "theta_plus", self.theta_plus, 0.0)
        check_float("KWTAHebbian", "tau_theta", self.tau_theta, 0.0, low_open=True)

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

    def brian2_equations(self) -> dict:
        """``model``, ``on_pre``, ``on_post`` strings for a Brian2 ``Synapses`` (see module docstring).

        Names the constants ``tau_pre``, ``rate_max``, ``eta_s``, ``w_max`` (namespace of the run).
        """
        return {
            "model": "w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)",
            "on_pre": "apre += 1\nv_post += w * w_gain",
            "on_post": "w = clip(w + eta_s * (apre / (rate_max * tau_pre) - w), 0, w_max)",
        }

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
