"""The bidirectional network of equilibrium propagation: energy, Euler relaxation, exact and fixed-point solvers.

Network (Scellier & Bengio 2017; the discrete form of Liu et al. 2024 / Laborieux et al. 2021): a dense
:class:`~neurolearn.networks.feedforward.FeedForward` whose weights act in both directions, input ``x``
clamped, states ``s_1 .. s_L`` (hidden ..., output) in ``[0, 1]``, ``rho = hardsigmoid`` so that
``rho(s) = s`` and ``rho'(s) = 1`` on the clamped states. Each Euler step (``dt``), all layers at once:

    s_l <- clamp( s_l + dt ( -s_l + W_l s_{l-1} + b_l + W_{l+1}^T s_{l+1} ), 0, 1 )
    s_L <- clamp( s_L + dt ( -s_L + W_L s_{L-1} + b_L + beta m (d - s_L) ), 0, 1 )      (nudged)

``m`` is the output dropout mask. The energy whose (projected) gradient flow this is,

    F = E + beta C,   E = 1/2 sum_l |s_l|^2 - sum_l s_l . (W_l s_{l-1} + b_l),   C = 1/2 |m (s_L - d)|^2 .

What does not change during the relaxation is computed once: the input drive ``W_1 x + b_1``. For
one layer the output's drive is constant and the clamped Euler recursion has the exact solution

    s_t = clamp( z* + (s_0 - z*) a^t, 0, 1 ),   a = 1 - dt (1 + beta m),   z* = (u + beta m d) / (1 + beta m)

(monotone in t when 0 < a < 1, so clamping commutes with the recursion); used when
``exact_single_layer`` is true. ``tol > 0`` ends a free phase early once no state moves by more than
``tol`` in a step.

Fixed points. The Euler recursion has the fixed points of the clamped map

    s_l = clamp( W_l s_{l-1} + b_l + W_{l+1}^T s_{l+1}, 0, 1 ),                       l < L
    s_L = clamp( (W_L s_{L-1} + b_L + beta m d) / (1 + beta m), 0, 1 ).

``solver="alternating"`` reaches one by block Gauss-Seidel sweeps of that map, bottom layer first, each
layer from the newest states of its neighbours: each sweep sets one layer to the exact minimiser of
``F`` with its neighbours held, so ``F`` never increases (for ``|beta| < 1`` each block is convex).
Sweeps stop once no state moves by more than ``solver_tol``; a phase that has not converged within its
step budget is redone with the Euler steps (a fallback, counted in ``stats``).

Top-down products ``s_{l+1} W_{l+1}`` read a sparse state (a few percent of kWTA output cells are
non-zero): below :data:`SPARSE_DENSITY` non-zeros on the CPU they are a sparse-dense product, the same
sum in another order.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import MutableMapping

import torch

from .._validate import ParameterError

SOLVERS = ("euler", "alternating")
#: largest fraction of non-zero states for which a top-down product is computed sparse (CPU; set below the
#: crossover measured for the two-layer MNIST network, docs/design.md)
SPARSE_DENSITY = 0.12


@dataclass(frozen=True)
class Relaxation:
    """How a phase relaxes: Euler step ``dt``, early stop ``tol`` (free phase, Euler), the exact
    single-layer solution, the solver (``"euler"`` or ``"alternating"``) and its tolerance."""

    dt: float = 0.2
    tol: float = 0.0
    exact_single_layer: bool = True
    solver: str = "euler"
    solver_tol: float = 1e-4


def check_network(net, owner: str = "EquilibriumProp") -> None:
    """The network must be dense with hardsigmoid cells (no hidden dropout): the bidirectional network."""
    if not getattr(net, "dense_only", True):
        raise ParameterError(f"{owner}: the network must be dense (the bidirectional network has no conv layers)")
    acts = [net.activation_of(l) for l in range(net.n_layers)] if hasattr(net, "activation_of") else \
        [net.hidden_activation] * (net.n_layers - 1) + [net.output_activation]
    if any(a != "hardsigmoid" for a in acts):
        raise ParameterError(
            f"{owner}: the network's activations must be 'hardsigmoid' (the bidirectional network), "
            f"got {acts} for layers 1..{net.n_layers}")
    if any(p > 0 for p in net.dropout[1:-1]):
        raise ParameterError(f"{owner}: hidden dropout must be 0 (only input and output dropout are defined)")


def topdown(s: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``s @ W`` (the top-down drive ``W^T s`` of each sample), sparse-dense when ``s`` is sparse on the CPU."""
    if s.device.type == "cpu" and s.numel() >= 4096 and s.dtype == W.dtype:
        nnz = int(torch.count_nonzero(s))
        if nnz < SPARSE_DENSITY * s.numel():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                return s.to_sparse_csr() @ W
    return s @ W


def layer_drive(W, b, drive0, states, l):
    """Input to layer ``l``: ``W_l s_{l-1} + b_l`` (``drive0`` for the first) plus the top-down
    ``W_{l+1}^T s_{l+1}`` below the output. ``drive0`` itself is returned for a single layer."""
    drive = drive0 if l == 0 else torch.nn.functional.linear(states[l - 1], W[l], b[l])
    if l < len(W) - 1:
        drive = drive + topdown(states[l + 1], W[l + 1])
    return drive


def energy(net, x, states, beta: float = 0.0, target=None, mask=None) -> torch.Tensor:
    """``F = E + beta C`` per sample (module docstring)."""
    W = [layer.weight.detach() for layer in net.layers]
    b = [layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0]) for layer, w in zip(net.layers, W)]
    below = [x] + list(states[:-1])
    E = sum(0.5 * (s * s).sum(1) - (s * (h @ w.T + bb)).sum(1) for s, h, w, bb in zip(states, below, W, b))
    if beta:
        diff = states[-1] - target
        if mask is not None:
            diff = diff * mask
        E = E + beta * 0.5 * (diff * diff).sum(1)
    return E


def relax(net, x: torch.Tensor, states=None, steps: int = 40, beta: float = 0.0, target=None, mask=None,
          drive0=None, how: Relaxation = Relaxation(), stats: MutableMapping | None = None) -> list:
    """Relax the clamped dynamics (module docstring) for ``steps`` steps from ``states`` (``None``:
    zeros, the free phase); ``beta != 0`` nudges the output toward ``target`` (``mask``: output dropout).
    ``drive0`` is the precomputed input drive ``W_1 x + b_1``. ``stats`` (a counter) receives the
    alternating solver's ``<phase>_solves``, ``_sweeps`` and ``_fallbacks``. Returns ``[s_1, ..., s_L]``."""
    L = net.n_layers
    W = [layer.weight.detach() for layer in net.layers]
    b = [layer.bias.detach() if layer.bias is not None else None for layer in net.layers]
    if drive0 is None:
        drive0 = torch.nn.functional.linear(x, W[0], b[0])
    B = drive0.shape[0]
    if states is None:
        states = [torch.zeros(B, n, dtype=drive0.dtype, device=drive0.device) for n in net.sizes[1:]]
    else:
        states = [s.clone() for s in states]
    if L == 1 and how.exact_single_layer:
        return [exact_single(drive0, states[0], steps, how.dt, beta, target, mask)]
    nudge = None
    if beta != 0.0:
        nudge = beta if mask is None else beta * mask
    stats = Counter() if stats is None else stats
    phase = "free" if beta == 0.0 else "nudged"
    if how.solver == "alternating":
        solved = alternating(W, b, drive0, states, steps, how.solver_tol, nudge, target, phase, stats)
        if solved is not None:
            return solved
        stats[f"{phase}_fallbacks"] += 1
    keep = 1.0 - how.dt
    for _ in range(steps):
        new = []
        for l in range(L):
            drive = layer_drive(W, b, drive0, states, l)
            s = states[l] * keep
            s.add_(drive, alpha=how.dt)
            if l == L - 1 and nudge is not None:
                s.add_(how.dt * nudge * (target - states[l]))
            new.append(s.clamp_(0.0, 1.0))
        if how.tol > 0 and beta == 0.0:
            moved = max((n - o).abs().max().item() for n, o in zip(new, states))
            states = new
            if moved < how.tol:
                break
        else:
            states = new
    return states


def alternating(W, b, drive0, states, sweeps, solver_tol, nudge=None, target=None, phase="free", stats=None):
    """Gauss-Seidel sweeps of the clamped fixed-point map from ``states``; ``None`` if no sweep moved
    every state by at most ``solver_tol`` within ``sweeps`` sweeps."""
    L = len(W)
    states = list(states)
    stats = Counter() if stats is None else stats
    stats[f"{phase}_solves"] += 1
    for _ in range(sweeps):
        stats[f"{phase}_sweeps"] += 1
        moved = 0.0
        for l in range(L):
            drive = layer_drive(W, b, drive0, states, l)
            if l == L - 1 and nudge is not None:
                drive = (drive + nudge * target) / (1.0 + nudge)
            new = drive.clamp(0.0, 1.0) if drive is drive0 else drive.clamp_(0.0, 1.0)  # drive0 is reused
            moved = max(moved, (new - states[l]).abs().max().item())
            states[l] = new
        if moved <= solver_tol:
            return states
    return None


def exact_single(u, s0, steps, dt, beta=0.0, target=None, mask=None):
    """The clamped Euler recursion of one layer after ``steps`` steps, in closed form (module docstring)."""
    if beta == 0.0:
        return (u + (s0 - u) * (1.0 - dt) ** steps).clamp_(0.0, 1.0)
    bm = beta if mask is None else beta * mask
    bm = torch.as_tensor(bm, dtype=u.dtype)
    a = 1.0 - dt * (1.0 + bm)
    if (a <= 0).any():
        raise ParameterError(
            f"EquilibriumProp: dt (1 + beta) must be < 1 for the exact single-layer solution, "
            f"got dt={dt}, beta={beta}; set exact_single_layer=false")
    z = (u + bm * target) / (1.0 + bm)
    return (z + (s0 - z) * a.pow(steps)).clamp_(0.0, 1.0)
