"""Whole training steps of the credit-assignment methods, written from the papers' equations, as checkables.

Each function takes the population sizes ``(n_0, ..., n_L)`` of an ``L``-layer network and returns a
:class:`~neurolearn.locality.contract.Checkable` whose update computes the *whole* step -- the output
error, the error or target of every hidden layer and every layer's weight change -- from the recorded
state: the input ``x`` (cells of ``p0``), each layer's input current ``u_l`` (cells of ``p_l``), the
target ``d`` (a signal to the output cells through the pathway ``"target"``), the learned weights
``W_l`` and, where the method has them, fixed matrices (:class:`~neurolearn.locality.contract.Fixed`).
Hidden cells compute ``h_l = tanh(u_l)``, output cells ``y = sigmoid(u_L)``; the loss is
``1/2 |y - d|^2``, so the output error is ``e_L = (y - d) * y (1 - y)`` and every layer learns by the
delta rule ``dW_l = -e_l^T h_{l-1}`` (summed over the batch). The methods differ only in how ``e_l``
reaches a hidden layer:

* backprop (Rumelhart et al. 1986): ``e_l = (e_{l+1} W_{l+1}) * f'(u_l)`` -- reads ``W_{l+1}``: weight transport;
* sign-symmetric feedback (Liao, Leibo & Poggio 2016): ``e_l = (e_{l+1} sign(W_{l+1})) * f'(u_l)`` --
  still computed from ``W_{l+1}``: weight transport;
* feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016): ``e_l = (e_{l+1} B_{l+1}) * f'(u_l)``
  with a fixed random ``B_{l+1}`` (shape of ``W_{l+1}``), delivered through the pathway ``"feedback B{l+1}"``;
* direct feedback alignment (Noekland 2016): ``e_l = (e_L D_l) * f'(u_l)``, a fixed random ``D_l``
  (``n_L x n_l``) from the output straight to layer ``l``, pathway ``"direct D{l}"``;
* difference target propagation (Lee, Zhang, Fischer & Bengio 2015): a target per layer,
  ``t_L = y - eta (y - d)`` and ``t_l = h_l + g_{l+1}(t_{l+1}) - g_{l+1}(h_{l+1})`` with the learned
  inverse ``g_{l+1}(h) = tanh(G_{l+1} h)`` (``G_{l+1}``: ``n_l x n_{l+1}``), fixed while the forward
  weights learn, so a :class:`Fixed` matrix on the pathway ``"inverse G{l+1}"``; each layer moves its
  output toward its own target: ``dW_l = -((h_l - t_l) * f'(u_l))^T h_{l-1}``.

Each hidden layer's contract allows ``pre``, ``post`` and ``neuron_signal`` through the pathways above
it (the target and, for FA / DFA / DTP, the fixed matrices that carry it down); the output layer's
through ``"target"``. ``builtin_steps()`` lists them with the verdict each must get.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._validate import ParameterError
from .contract import Cells, Checkable, Contract, Fixed, Layer, Signal, StateSpec, Weight

#: the feedback of :func:`error_feedback_step`
FEEDBACKS = ("backprop", "sign", "fa", "dfa")
_NAMES = {"backprop": "Backprop from equations", "sign": "Sign-symmetric", "fa": "Feedback alignment",
          "dfa": "Direct feedback alignment"}
#: step size of the top target of difference target propagation, ``t_L = y - eta (y - d)``
DTP_ETA = 0.5


def _sizes(sizes: Sequence[int], what: str) -> tuple:
    sizes = tuple(sizes)
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ParameterError(f"{what}: sizes must be at least two population sizes >= 1 (input, ..., output), "
                             f"got {sizes!r}")
    return sizes


def mlp_base(sizes, pathway: str = "target") -> tuple:
    """``(populations, layers, entries)`` of a whole step on an MLP of ``sizes``: populations ``p0..pL``, layers
    ``W1..WL`` (``Wl`` from ``p{l-1}`` to ``pl``), entries ``x`` (input cells), ``u{l}`` (currents), ``W{l}``
    (weights) and ``d`` (the target delivered to the output cells through ``pathway``)."""
    sizes = tuple(sizes)
    L = len(sizes) - 1
    pops = {f"p{l}": n for l, n in enumerate(sizes)}
    layers = tuple(Layer(f"W{l}", f"p{l}", f"p{l - 1}") for l in range(1, L + 1))
    entries = {"x": Cells("p0")}
    for l in range(1, L + 1):
        entries[f"u{l}"] = Cells(f"p{l}", "current")
        entries[f"W{l}"] = Weight(f"W{l}")
    entries["d"] = Signal(f"p{L}", pathway)
    return pops, layers, entries


def _contracts(name: str, L: int, pathways) -> dict:
    """``pathways(l)``: the pathways hidden layer ``l`` declares; the output layer declares ``"target"``."""
    allows = {"pre", "post", "neuron_signal"}
    out = {f"W{L}": Contract(f"{name} W{L}", allows=allows, pathways=("target",))}
    for l in range(1, L):
        out[f"W{l}"] = Contract(f"{name} W{l}", allows=allows, pathways=tuple(pathways(l)))
    return out


def _forward(s: dict, L: int):
    h = [s["x"]] + [torch.tanh(s[f"u{l}"]) for l in range(1, L)] + [torch.sigmoid(s[f"u{L}"])]
    slope = [None] + [1 - h[l] * h[l] for l in range(1, L)] + [h[L] * (1 - h[L])]  # f'(u_l)
    return h, slope


def error_feedback_step(sizes: Sequence[int], feedback: str = "fa") -> Checkable:
    """A whole delta-rule training step whose hidden errors arrive by ``feedback`` (module docstring).

    ``e_L = (y - d) y (1 - y)``; ``e_l = (e_{l+1} F_{l+1}) * (1 - h_l^2)`` with ``F = W`` (``"backprop"``),
    ``sign(W)`` (``"sign"``), a fixed ``B`` (``"fa"``), or ``e_l = (e_L D_l) * (1 - h_l^2)`` (``"dfa"``);
    ``dW_l = -e_l^T h_{l-1}``.
    """
    if feedback not in FEEDBACKS:
        raise ParameterError(f"error_feedback_step: feedback must be one of {FEEDBACKS}, got {feedback!r}")
    sizes = _sizes(sizes, "error_feedback_step")
    L = len(sizes) - 1
    pops, layers, entries = mlp_base(sizes)
    if feedback == "fa":
        for l in range(2, L + 1):
            entries[f"B{l}"] = Fixed(f"feedback B{l}", post=f"p{l}", pre=f"p{l - 1}")
        contracts = _contracts("FA", L, lambda l: [f"feedback B{m}" for m in range(l + 1, L + 1)])
    elif feedback == "dfa":
        for l in range(1, L):
            entries[f"D{l}"] = Fixed(f"direct D{l}", post=f"p{L}", pre=f"p{l}")
        contracts = _contracts("DFA", L, lambda l: [f"direct D{l}"])
    else:  # the error arrives from above; the contract is the best a local rule could claim
        contracts = _contracts(_NAMES[feedback], L, lambda l: ["target"])
    spec = StateSpec(pops, layers, entries)

    def fn(s):
        h, slope = _forward(s, L)
        e = [None] * (L + 1)
        e[L] = (h[L] - s["d"]) * slope[L]
        for l in range(L - 1, 0, -1):
            if feedback == "dfa":
                down = e[L] @ s[f"D{l}"]
            else:
                F = {"backprop": s[f"W{l + 1}"], "sign": torch.sign(s[f"W{l + 1}"])}.get(feedback)
                down = e[l + 1] @ (s[f"B{l + 1}"] if F is None else F)
            e[l] = down * slope[l]
        return {f"W{l}": -(e[l].T @ h[l - 1]) for l in range(1, L + 1)}

    return Checkable(f"{_NAMES[feedback]} ({L} layers)", spec, contracts, fn)


def dtp_step(sizes: Sequence[int], eta: float = DTP_ETA) -> Checkable:
    """A whole difference-target-propagation step (Lee et al. 2015), inverses ``G`` fixed (module docstring).

    ``t_L = y - eta (y - d)``, ``t_l = h_l + tanh(t_{l+1} G_{l+1}^T) - tanh(h_{l+1} G_{l+1}^T)``,
    ``dW_l = -((h_l - t_l) * f'(u_l))^T h_{l-1}``.
    """
    sizes = _sizes(sizes, "dtp_step")
    if not (isinstance(eta, (int, float)) and 0 < eta <= 1):
        raise ParameterError(f"dtp_step: eta must be in (0, 1], got {eta!r}")
    L = len(sizes) - 1
    pops, layers, entries = mlp_base(sizes)
    for l in range(2, L + 1):
        entries[f"G{l}"] = Fixed(f"inverse G{l}", post=f"p{l - 1}", pre=f"p{l}")
    contracts = _contracts("DTP", L, lambda l: ["target"] + [f"inverse G{m}" for m in range(l + 1, L + 1)])
    spec = StateSpec(pops, layers, entries)

    def fn(s):
        h, slope = _forward(s, L)
        t = [None] * (L + 1)
        t[L] = h[L] - eta * (h[L] - s["d"])
        for l in range(L - 1, 0, -1):
            G = s[f"G{l + 1}"]
            t[l] = h[l] + torch.tanh(t[l + 1] @ G.T) - torch.tanh(h[l + 1] @ G.T)
        return {f"W{l}": -(((h[l] - t[l]) * slope[l]).T @ h[l - 1]) for l in range(1, L + 1)}

    return Checkable(f"Difference target prop ({L} layers)", spec, contracts, fn)


def builtin_steps() -> list:
    """``(factory, n_populations, expected_local, expected_kinds)`` of the whole steps in ``check-locality``."""
    wt = {"weight transport"}
    return [
        (lambda s: error_feedback_step(s, "fa"), 3, True, set()),
        (lambda s: error_feedback_step(s, "fa"), 4, True, set()),
        (lambda s: error_feedback_step(s, "dfa"), 4, True, set()),
        (lambda s: dtp_step(s), 3, True, set()),
        (lambda s: dtp_step(s), 4, True, set()),
        (lambda s: error_feedback_step(s, "sign"), 3, False, wt),
        (lambda s: error_feedback_step(s, "sign"), 4, False, wt),
        (lambda s: error_feedback_step(s, "backprop"), 4, False, wt),
    ]
