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
and the weight itself.

The rule is written once (:data:`EQUATIONS`, :mod:`neurolearn.plasticity.equations`): the torch update
is the rate limit of those synaptic equations with the postsynaptic spikes delivered as the winners ``d``
(``post_events="d"``, pathway ``"KWTA"``), the contract is derived from the names they read (pre, the
trace ``apre``, the weight, the KWTA signal) and :meth:`KWTAHebbian.brian2_equations` returns the
generated strings and the namespace, with Brian2 units, of every parameter they name (``k`` included,
as ``k_winners``, for the circuit).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import torch

from .._validate import check_float
from ..describe import Description, param, register
from ..locality.contract import Checkable, Contract
from .equations import CompiledRule, RuleEquations

#: the one description of the rule (Brian2 syntax); everything else is derived from it
EQUATIONS = RuleEquations(
    "KWTAHebbian",
    model="w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)",
    on_pre="apre += 1",
    on_post="w += eta * (c * apre / (rate_max * tau_pre) - w)",
    signals={"d": "KWTA"},
    post_events="d",
    bounds=("0", "w_max"),
    reference="Grossberg 1976; Rumelhart & Zipser 1985; Diehl & Cook 2015 (spiking form)",
)


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

    EQUATIONS = EQUATIONS

    def namespace(self, rate_max: float = 200.0, tau_pre: float = 0.02) -> dict:
        """The synaptic parameters with Brian2 units: ``eta``, ``c``, ``w_max = c``, ``rate_max`` (Hz), ``tau_pre`` (s)."""
        from ..sim.brian2_kwta import quiet_brian2

        b2 = quiet_brian2()
        return {"eta": self.eta, "c": self.c, "w_max": self.c, "rate_max": rate_max * b2.Hz, "tau_pre": tau_pre * b2.second}

    @functools.cached_property
    def compiled(self) -> CompiledRule:
        """:data:`EQUATIONS` compiled with :meth:`namespace` (the rate limit does not depend on ``rate_max``, ``tau_pre``)."""
        return EQUATIONS.compile(self.namespace())

    @property
    def contract(self) -> Contract:
        """Derived from the equations: pre, trace, weight, neuron_signal[KWTA]; batch = samples."""
        return self.compiled.contract

    def torch_update(self, x: torch.Tensor, d: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``dW = eta sum_b d_bi (c x_bj - W_ij)`` (pure; batch = sum of per-sample updates): the rate limit of
        :data:`EQUATIONS` with ``x`` the pre activities and ``d`` the post spikes (winners)."""
        return self.compiled.torch_update(x, None, W, d=d)

    def checkable(self, n_pre: int, n_post: int) -> Checkable:
        """:meth:`torch_update` as a checkable update: ``x`` (pre cells), the winners ``d`` delivered to
        each output cell by the KWTA circuit (pathway ``"KWTA"``) and the weights ``W``; the change of
        ``W_ij`` reads ``x_j``, ``d_i`` and ``W_ij`` only (sign: ``dW``, not a gradient)."""
        return self.compiled.checkable(n_pre, n_post, keys={"pre": "x"}, populations=("input", "output"))

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
        namespace = self.namespace(rate_max, tau_pre)
        out = EQUATIONS.compile(namespace).brian2(namespace)
        out["namespace"].update({"theta_plus": self.theta_plus, "tau_theta": self.tau_theta * presentation * b2.second,
                                 "k_winners": self.k})
        return out

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
