"""Equilibrium propagation: two relaxations of a bidirectional network and a contrastive Hebbian step.

The network and its dynamics -- energy, Euler relaxation, the exact single-layer solution, the
fixed-point solver -- are :mod:`neurolearn.networks.bidirectional`. This module turns the phases into
updates (Scellier & Bengio 2017; Liu et al. 2024; Laborieux et al. 2021): a free phase of
``free_steps`` steps from ``s = 0``, the objective's target ``d`` decided on the free output, a nudged
phase of ``nudged_steps`` steps from the free state with ``beta``, and the :class:`ContrastiveHebbian`
rule on every layer (the output states times the output dropout mask: a dropped cell does not learn),

    g_l = -1/(beta B) [ rho(s_l^beta)^T rho(s_{l-1}^beta) - rho(s_l^0)^T rho(s_{l-1}^0) ],

never backprop through the relaxation. ``beta_sign``: ``"positive"`` (always +beta), ``"random"``
(sign drawn per mini-batch from the batch's generator: the authors' one-sided estimator) or
``"symmetric"`` (two nudged phases at +beta and -beta, ``g = -1/(2 beta B) [ ... ^{+beta} - ... ^{-beta} ]``).
``free_solver`` / ``nudged_solver`` choose the published Euler steps or the fixed-point solver per
phase; its counts (solves, sweeps, Euler fallbacks) are the method's state (``state["solver"]``).
The nudge needs a target: the objective must give one (``gives_target``).

Input dropout (``input_dropout``): ``"scaled"`` multiplies the clamped input by ``r / (1 - p)``,
``r ~ Bernoulli(1 - p)`` (inverted dropout: the training drive has the test drive's mean);
``"unscaled"`` by ``r`` alone, as the authors' EP code does (Liu et al. 2024, ``funcs/tools.py``
``drop_all_layers``: the training drive is ``(1 - p)`` times the test drive on average). Same random
draws either way. Side by side with their code (issue 14, docs/results.md) the unscaled mask is what
reaches their accuracy on the one-layer network.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .._validate import ParameterError
from ..describe import param, register
from ..locality.contract import Cells, Checkable, Layer, StateSpec, Weight
from ..networks import bidirectional as bd
from ..networks.feedforward import keep_mask
from ..networks.layers import ops
from ..plasticity.base import apply_updates
from ..plasticity.contrastive_hebbian import ContrastiveHebbian
from .base import CreditMethod

BETA_SIGNS = ("positive", "random", "symmetric")
INPUT_DROPOUT = ("scaled", "unscaled")
SOLVERS = bd.SOLVERS


def mask_output(states: list, mask: torch.Tensor) -> list:
    """``states`` with the output ``s_L`` times the output dropout mask ``m`` (the update's view of it).

    A dropped output cell is held at 0 in both phases by the authors' code (Liu et al. 2024,
    ``ep/network.py``: ``s = m (s + dt ds/dt)`` every step), so it does not learn from that sample. Here
    it is not nudged (``beta m``), but its free phase stops ``(1 - dt)^T`` short of the fixed point and
    the nudged phase relaxes it further, a change of about ``1e-4 u`` it would otherwise learn from.
    """
    return list(states[:-1]) + [states[-1] * mask]


@register("credit", "equilibrium")
@dataclass(frozen=True)
class EquilibriumProp(CreditMethod):
    """Equilibrium propagation credit assignment (see module docstring)."""

    beta: float = param(0.2, low=0.0, low_open=True, help="nudging strength")
    free_steps: int = param(40, low=1, help="Euler steps (or solver sweeps) of the free phase")
    nudged_steps: int = param(10, low=1, help="Euler steps (or solver sweeps) of the nudged phase")
    dt: float = param(0.2, low=0.0, high=1.0, low_open=True, help="Euler step")
    beta_sign: str = param("random", choices=BETA_SIGNS, help="sign of beta per mini-batch")
    tol: float = param(0.0, low=0.0, help="end the free Euler phase once no state moves more than this (0: never)")
    exact_single_layer: bool = param(True, help="closed-form relaxation of one-layer networks")
    free_solver: str = param("euler", choices=SOLVERS, help="free phase: published Euler steps or fixed-point sweeps")
    nudged_solver: str = param("euler", choices=SOLVERS, help="nudged phase: Euler steps or fixed-point sweeps")
    solver_tol: float = param(1e-4, low=0.0, low_open=True, help="fixed-point solver: largest move at convergence")
    input_dropout: str = param("scaled", choices=INPUT_DROPOUT,
                               help="input dropout mask r/(1-p) (scaled) or r (unscaled: the authors' EP code)")
    rule: ContrastiveHebbian = field(default_factory=ContrastiveHebbian)

    def input_scale(self, p: float) -> float:
        """Factor of the kept inputs under input dropout ``p``: ``1 / (1 - p)`` (scaled) or 1 (unscaled)."""
        return 1.0 if self.input_dropout == "unscaled" or p == 0 else 1.0 / (1 - p)

    def drop_input(self, net, x: torch.Tensor, generator=None) -> torch.Tensor:
        """``x`` times the input dropout mask: ``x r / (1 - p)`` (scaled) or ``x r`` (unscaled),
        ``r ~ Bernoulli(1 - p)`` drawn as the network draws it (``x`` itself when ``p = 0``)."""
        p = net.dropout[0]
        if p == 0:
            return x
        if self.input_dropout == "scaled":
            return net.drop(x, 0, generator)
        return x * keep_mask(x.shape, 1 - p, generator, x.device)

    def how(self, phase: str) -> bd.Relaxation:
        """The :class:`~neurolearn.networks.bidirectional.Relaxation` of ``phase`` ("free" or "nudged")."""
        return bd.Relaxation(self.dt, self.tol, self.exact_single_layer,
                             self.free_solver if phase == "free" else self.nudged_solver, self.solver_tol)

    def init_state(self, net, generator=None) -> dict:
        """``{"solver": Counter}``: the fixed-point solver's solves, sweeps and fallbacks per phase."""
        return {"solver": Counter()}

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """A dense hardsigmoid network without hidden dropout and an objective that gives a target."""
        bd.check_network(net)
        if not getattr(objective, "gives_target", False):
            raise ParameterError(f"EquilibriumProp: the objective must give a target to nudge toward; "
                                 f"{type(objective).__name__} gives only an error")

    def spiking_support(self, net) -> str | None:
        """One-layer networks only: the spiking conversion is feed-forward, and the free equilibrium of a
        one-layer network is its feed-forward output, but a deeper one's hidden cells also read the layer above."""
        if net.n_layers > 1:
            return "the free equilibrium of a multi-layer EP network is not a feed-forward pass (one layer only)"
        return super().spiking_support(net)

    def relax(self, net, x: torch.Tensor, states=None, steps: int | None = None, beta: float = 0.0,
              target: torch.Tensor | None = None, mask: torch.Tensor | None = None, drive0=None, stats=None):
        """One phase of the dynamics with this method's settings (``steps``: ``free_steps`` by default);
        see :func:`neurolearn.networks.bidirectional.relax`."""
        steps = self.free_steps if steps is None else steps
        return bd.relax(net, x, states, steps, beta, target, mask, drive0, self.how("free" if beta == 0 else "nudged"),
                        stats)

    @torch.no_grad()
    def respond(self, net, x: torch.Tensor) -> torch.Tensor:
        """Output of the network: the free equilibrium's output state ``s_L^0`` (no dropout)."""
        bd.check_network(net)
        return self.relax(net, net.check_input(x))[-1]

    def step(self, net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> dict:
        """Free phase, target on the free output, nudged phase(s), contrastive Hebbian update."""
        stats = state.setdefault("solver", Counter())
        x = self.drop_input(net, net.check_input(x), generator)
        drive0 = ops(net.layers[0]).current(net.layers[0], x)
        free = self.relax(net, x, drive0=drive0, stats=stats)
        mask = net.output_mask(x.shape[0], generator, x.device)
        y = free[-1] if mask is None else free[-1] * mask
        out = objective.error(y, objective_state, mask, labels)
        beta = self.beta
        if self.beta_sign == "random" and torch.randint(0, 2, (1,), generator=generator).item():
            beta = -beta
        nudged = self.relax(net, x, free, self.nudged_steps, beta, out.target, mask, drive0, stats)
        if self.beta_sign == "symmetric":
            other = self.relax(net, x, free, self.nudged_steps, -beta, out.target, mask, drive0, stats)
            phases_a, phases_b, scale = nudged, other, 1.0 / (2 * beta * x.shape[0])
        else:
            phases_a, phases_b, scale = nudged, free, 1.0 / (beta * x.shape[0])
        if mask is not None:  # a dropped output cell does not learn (see mask_output)
            phases_a, phases_b = mask_output(phases_a, mask), mask_output(phases_b, mask)
        pre_a, pre_b = [x] + phases_a[:-1], [x] + phases_b[:-1]
        updates = [self.rule.factors(pre_a[l], phases_a[l], pre_b[l], phases_b[l], scale) for l in range(net.n_layers)]
        apply_updates(optimizer, list(net.layers), updates)
        return {"loss": float(out.loss)}

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "hardsigmoid",
                  hidden_activation: str = "hardsigmoid") -> Checkable:
        """The contrastive Hebbian update of every layer as a pure function of the recorded free and
        nudged states (the relaxation produces them; the update reads only pre and post cells)."""
        sizes = tuple(sizes)
        L = len(sizes) - 1
        pops = {f"p{i}": n for i, n in enumerate(sizes)}
        layers = tuple(Layer(f"W{l}", post=f"p{l}", pre=f"p{l - 1}") for l in range(1, L + 1))
        entries = {}
        for i in range(L + 1):
            entries[f"s{i}_free"] = Cells(f"p{i}", "free")
            entries[f"s{i}_nudged"] = Cells(f"p{i}", "nudged")
        for l in range(1, L + 1):
            entries[f"W{l}"] = Weight(f"W{l}")
        spec = StateSpec(pops, layers, entries)

        def fn(s):
            return {
                f"W{l}": self.rule.update(
                    s[f"s{l - 1}_nudged"], s[f"s{l}_nudged"], s[f"s{l - 1}_free"], s[f"s{l}_free"], self.beta, mean=False
                )
                for l in range(1, L + 1)
            }

        return Checkable(f"EquilibriumProp ({L} layer{'s' if L > 1 else ''})", spec,
                         {ly.name: self.rule.contract for ly in layers}, fn)
