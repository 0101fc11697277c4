"""Equilibrium propagation: two relaxations of a bidirectional network and a contrastive Hebbian step.

Network (Scellier & Bengio 2017; the discrete form of Liu et al. 2024 / Laborieux et al. 2021): input
``x`` clamped, states ``s_1 .. s_L`` (hidden ..., output) in ``[0, 1]``, ``rho = hardsigmoid`` so that
``rho(s) = s`` and ``rho'(s) = 1`` on the clamped states. Each Euler step (``dt``), all layers at once:

    s_l <- clamp( s_l + dt ( -s_l + W_l rho(s_{l-1}) + b_l + W_{l+1}^T rho(s_{l+1}) ), 0, 1 )
    s_L <- clamp( s_L + dt ( -s_L + W_L rho(s_{L-1}) + b_L + beta m (d - s_L) ), 0, 1 )      (nudged)

Free phase: ``free_steps`` steps from ``s = 0`` with ``beta = 0`` gives ``s^0``; the target ``d`` is
decided on the free output; nudged phase: ``nudged_steps`` steps from ``s^0`` with ``beta`` gives
``s^beta``. The weights then move by the :class:`ContrastiveHebbian` rule,

    g_l = -1/(beta B) [ rho(s_l^beta)^T rho(s_{l-1}^beta) - rho(s_l^0)^T rho(s_{l-1}^0) ],

never by backprop through the relaxation. ``beta_sign``: ``"positive"`` (always +beta), ``"random"``
(sign drawn per mini-batch: the authors' one-sided estimator) or ``"symmetric"`` (two nudged phases at
+beta and -beta, ``g = -1/(2 beta B) [ ... ^{+beta} - ... ^{-beta} ]``, Laborieux et al. 2021).

What does not change during the relaxation is computed once: the input drive ``W_1 x + b_1``. For
one layer the output's drive is constant and the clamped Euler recursion has the exact solution

    s_t = clamp( z* + (s_0 - z*) a^t, 0, 1 ),   a = 1 - dt (1 + beta m),   z* = (u + beta m d) / (1 + beta m)

(monotone in t when 0 < a < 1, so clamping commutes with the recursion); it is used when
``exact_single_layer`` is true and tested equal to the step-by-step recursion. ``tol > 0`` ends the
free phase early once no state moves by more than ``tol`` in a step (the equilibrium is reached).

Solvers. The Euler recursion above (``"euler"``, the published dynamics) has the fixed points of the
clamped map (at a fixed point ``s_l = 0`` needs a drive <= 0, ``s_l = 1`` a drive >= 1, otherwise
``s_l`` equals its drive)

    s_l = clamp( W_l s_{l-1} + b_l + W_{l+1}^T s_{l+1}, 0, 1 ),                       l < L
    s_L = clamp( (W_L s_{L-1} + b_L + beta m d) / (1 + beta m), 0, 1 )                  (beta = 0: free)

``"alternating"`` reaches such a fixed point by block Gauss-Seidel sweeps of that map, bottom layer
first, each layer computed from the newest states of its neighbours. Each sweep sets one layer to the
exact minimiser of the energy ``F = E + beta C`` (Scellier & Bengio 2017) with its neighbours held,
so ``F`` never increases (for ``|beta| < 1`` each block is convex). Sweeps stop once no state moves by
more than ``solver_tol`` in a sweep (default 1e-4: about where the published 60 Euler steps leave the
free phase of a 784-2000-2000 network; the published 20 nudged steps stop about 1% of the
free-to-nudged distance short of its fixed point); a sweep costs what one Euler step costs. There the
solver used 6 free and 5 nudged sweeps per batch in the first epochs and 10.5 and 8.5 on average over
the paper's 100 epochs (docs/results.md). If a
phase has not converged after its step budget (``free_steps`` / ``nudged_steps`` sweeps), it is redone
with the published Euler steps; solves, sweeps and fallbacks are counted in
``EquilibriumProp.solver_stats``. ``free_solver`` and ``nudged_solver`` choose per phase; one-layer
networks use the exact solution above (``exact_single_layer``) whatever the solver.

Top-down products ``s_{l+1} W_{l+1}`` read a sparse state (a few percent of kWTA output cells are
non-zero): below ``SPARSE_DENSITY`` non-zeros on the CPU they are computed as a sparse-dense product,
the same sum in another order.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch

from .._validate import ParameterError, check_bool, check_choice, check_float, check_int
from ..locality.contract import Cells, Checkable, Layer, StateSpec, Weight
from ..networks.mlp import MLP
from ..plasticity.base import apply_updates
from ..plasticity.contrastive_hebbian import ContrastiveHebbian
from .base import mse

BETA_SIGNS = ("positive", "random", "symmetric")
SOLVERS = ("euler", "alternating")
#: largest fraction of non-zero states for which a top-down product is computed sparse (CPU; measured
#: crossover for 32 x 2000 states and 2000 x 2000 weights: about 0.18)
SPARSE_DENSITY = 0.12


def topdown(s: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``s @ W`` (the top-down drive ``W^T s`` of each sample), sparse-dense when ``s`` is sparse on the CPU."""
    if s.device.type == "cpu" and s.numel() >= 4096 and s.dtype == W.dtype:
        nnz = int(torch.count_nonzero(s))
        if nnz < SPARSE_DENSITY * s.numel():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                return s.to_sparse_csr() @ W
    return s @ W


def _drive(W, b, drive0, states, l):
    """Input to layer ``l``: ``W_l s_{l-1} + b_l`` (``drive0`` for the first) plus the top-down
    ``W_{l+1}^T s_{l+1}`` below the output. ``drive0`` itself is returned for a single layer."""
    drive = drive0 if l == 0 else torch.nn.functional.linear(states[l - 1], W[l], b[l])
    if l < len(W) - 1:
        drive = drive + topdown(states[l + 1], W[l + 1])
    return drive


@dataclass(frozen=True)
class EquilibriumProp:
    """Equilibrium propagation credit assignment (see module docstring for the equations)."""

    beta: float = 0.2
    free_steps: int = 40
    nudged_steps: int = 10
    dt: float = 0.2
    beta_sign: str = "random"
    tol: float = 0.0
    exact_single_layer: bool = True
    free_solver: str = "euler"
    nudged_solver: str = "euler"
    solver_tol: float = 1e-4
    rule: ContrastiveHebbian = ContrastiveHebbian()
    #: counts of the alternating solver per phase: ``"<phase>_solves"``, ``"<phase>_sweeps"`` and
    #: ``"<phase>_fallbacks"`` (solves that did not converge and were redone with Euler steps)
    solver_stats: Counter = field(default_factory=Counter, compare=False, repr=False)

    def __post_init__(self):
        n = "EquilibriumProp"
        check_float(n, "beta", self.beta, 0.0, low_open=True)
        check_int(n, "free_steps", self.free_steps, 1)
        check_int(n, "nudged_steps", self.nudged_steps, 1)
        check_float(n, "dt", self.dt, 0.0, 1.0, low_open=True)
        check_choice(n, "beta_sign", self.beta_sign, BETA_SIGNS)
        check_float(n, "tol", self.tol, 0.0)
        check_bool(n, "exact_single_layer", self.exact_single_layer)
        check_choice(n, "free_solver", self.free_solver, SOLVERS)
        check_choice(n, "nudged_solver", self.nudged_solver, SOLVERS)
        check_float(n, "solver_tol", self.solver_tol, 0.0, low_open=True)

    # ------------------------------------------------------------------ dynamics
    @staticmethod
    def _check_net(net: MLP):
        if net.hidden_activation != "hardsigmoid" and net.n_layers > 1 or net.output_activation != "hardsigmoid":
            raise ParameterError(
                "EquilibriumProp: the network's activations must be 'hardsigmoid' (the bidirectional network), "
                f"got hidden={net.hidden_activation!r}, output={net.output_activation!r}"
            )
        if any(p > 0 for p in net.dropout[1:-1]):
            raise ParameterError("EquilibriumProp: hidden dropout must be 0 (only input and output dropout are defined)")

    def relax(self, net: MLP, x: torch.Tensor, states=None, steps: int | None = None, beta: float = 0.0,
              target: torch.Tensor | None = None, mask: torch.Tensor | None = None, drive0=None):
        """Run the clamped Euler dynamics; returns the list of states ``[s_1, ..., s_L]``.

        ``states=None`` starts from zero (free phase); ``beta != 0`` adds the nudging force
        ``beta m (d - s_L)`` (``mask`` m: output dropout, ``None`` = all ones); ``drive0`` is the
        precomputed input drive ``W_1 x + b_1``; with ``tol > 0`` and ``beta = 0`` the loop stops
        once the largest change of a step is below ``tol``.
        """
        L = net.n_layers
        W = [layer.weight.detach() for layer in net.layers]
        b = [layer.bias.detach() if layer.bias is not None else None for layer in net.layers]
        if drive0 is None:
            drive0 = torch.nn.functional.linear(x, W[0], b[0])
        B = x.shape[0]
        if states is None:
            states = [torch.zeros(B, n, dtype=x.dtype, device=x.device) for n in net.sizes[1:]]
        else:
            states = [s.clone() for s in states]
        steps = self.free_steps if steps is None else steps
        if L == 1 and self.exact_single_layer:
            return [self._exact_single(drive0, states[0], steps, beta, target, mask)]
        nudge = None
        if beta != 0.0:
            nudge = beta if mask is None else beta * mask
        phase = "free" if beta == 0.0 else "nudged"
        if (self.free_solver if beta == 0.0 else self.nudged_solver) == "alternating":
            solved = self._alternating(W, b, drive0, states, steps, nudge, target, phase)
            if solved is not None:
                return solved
            self.solver_stats[f"{phase}_fallbacks"] += 1
        keep = 1.0 - self.dt
        for _ in range(steps):
            new = []
            for l in range(L):
                drive = _drive(W, b, drive0, states, l)
                s = states[l] * keep
                s.add_(drive, alpha=self.dt)
                if l == L - 1 and nudge is not None:
                    s.add_(self.dt * nudge * (target - states[l]))
                new.append(s.clamp_(0.0, 1.0))
            if self.tol > 0 and beta == 0.0:
                moved = max((n - o).abs().max().item() for n, o in zip(new, states))
                states = new
                if moved < self.tol:
                    break
            else:
                states = new
        return states

    def _alternating(self, W, b, drive0, states, sweeps, nudge=None, target=None, phase="free"):
        """Gauss-Seidel sweeps of the clamped fixed-point map (module docstring) from ``states``;
        ``None`` if no sweep moved every state by at most ``solver_tol`` within ``sweeps`` sweeps."""
        L = len(W)
        states = list(states)
        self.solver_stats[f"{phase}_solves"] += 1
        for _ in range(sweeps):
            self.solver_stats[f"{phase}_sweeps"] += 1
            moved = 0.0
            for l in range(L):
                drive = _drive(W, b, drive0, states, l)
                if l == L - 1 and nudge is not None:
                    drive = (drive + nudge * target) / (1.0 + nudge)
                new = drive.clamp(0.0, 1.0) if drive is drive0 else drive.clamp_(0.0, 1.0)  # drive0 is reused
                moved = max(moved, (new - states[l]).abs().max().item())
                states[l] = new
            if moved <= self.solver_tol:
                return states
        return None

    def _exact_single(self, u, s0, steps, beta, target, mask):
        if beta == 0.0:
            return (u + (s0 - u) * (1.0 - self.dt) ** steps).clamp_(0.0, 1.0)
        else:
            bm = beta if mask is None else beta * mask
            bm = torch.as_tensor(bm, dtype=u.dtype)
            a = 1.0 - self.dt * (1.0 + bm)
            if (a <= 0).any():
                raise ParameterError(
                    f"EquilibriumProp: dt (1 + beta) must be < 1 for the exact single-layer solution, "
                    f"got dt={self.dt}, beta={beta}; set exact_single_layer=false"
                )
            z = (u + bm * target) / (1.0 + bm)
        return (z + (s0 - z) * a.pow(steps)).clamp_(0.0, 1.0)

    @torch.no_grad()
    def respond(self, net: MLP, x: torch.Tensor) -> torch.Tensor:
        """Output of the network: the free equilibrium's output state ``s_L^0`` (no dropout)."""
        self._check_net(net)
        return self.relax(net, x)[-1]

    # ------------------------------------------------------------------ training
    def step(self, net: MLP, x, objective, state, optimizer, labels=None, generator=None, defer=None,
             out_mask=None) -> dict:
        """Free phase, target on the free output, nudged phase(s), contrastive Hebbian update.

        With ``defer`` (one-layer networks) ``x`` is already dropped out, the input drive comes from
        ``defer``, the output mask is ``out_mask`` and the update is recorded in ``defer`` (see
        :class:`~neurolearn.plasticity.base.DeferredLayer`).
        """
        self._check_net(net)
        if defer is not None:
            drive0 = defer.drive(x)
        else:
            x = net._drop(x, 0, generator)
            W0, b0 = net.layers[0].weight.detach(), net.layers[0].bias
            drive0 = torch.nn.functional.linear(x, W0, b0.detach() if b0 is not None else None)
        free = self.relax(net, x, drive0=drive0)
        mask = out_mask if defer is not None else net.output_mask(x.shape[0], generator, x.device)
        y = free[-1] if mask is None else free[-1] * mask
        d = objective.decide(y, state, mask, labels)
        loss = mse(y, d)
        beta = self.beta
        if self.beta_sign == "random":
            flip = torch.randint(0, 2, (1,), generator=generator).item()
            beta = -beta if flip else beta
        nudged = self.relax(net, x, free, self.nudged_steps, beta, d, mask, drive0)
        if self.beta_sign == "symmetric":
            other = self.relax(net, x, free, self.nudged_steps, -beta, d, mask, drive0)
            phases_a, phases_b, scale = nudged, other, 1.0 / (2 * beta * x.shape[0])
        else:
            phases_a, phases_b, scale = nudged, free, 1.0 / (beta * x.shape[0])
        pre_a, pre_b = [x] + phases_a[:-1], [x] + phases_b[:-1]
        updates = [
            self.rule.factors(pre_a[l], phases_a[l], pre_b[l], phases_b[l], scale) for l in range(net.n_layers)
        ]
        if defer is not None:
            defer.add(updates[0])
        else:
            apply_updates(optimizer, list(net.layers), updates)
        return {"loss": loss}

    def checkable(self, sizes) -> Checkable:
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
