"""Homeostasis: per-cell thresholds that equalise how often each cell wins.

    H <- H + gamma * (A - T)                                   (Liu et al. 2024, Eq. 2 / Eq. 10)

``A`` is the mean activity of the target ``d``: in *batch* mode the mean over the mini-batch
(classical moving average, Eq. 12), in *sequential* mode an exponential moving average over the
samples presented one by one, ``A <- eta * d + (1 - eta) * A`` (Eq. 11). ``T`` is the target
winning frequency (``k / n`` by default). The spiking counterpart is the adaptive threshold of
Diehl & Cook (2015), see :mod:`neurolearn.circuits.kwta_spiking`.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_choice, check_float, check_int


class Homeostasis(nn.Module):
    """State of the homeostatic thresholds ``H`` (a buffer, saved with the weights).

    ``update(d)`` applies ``H += gamma (A - T)`` with ``A`` the batch mean of ``d`` (mode ``"batch"``)
    or, sample by sample, the running mean ``A <- eta d_t + (1 - eta) A`` (mode ``"sequential"``).
    ``d`` may carry a dropout mask: cells dropped out for a sample still count in the mean with
    target 0, as in the authors' code.
    """

    def __init__(self, n: int, gamma: float, target: float, mode: str = "batch", eta: float = 0.6):
        super().__init__()
        self.n = check_int("Homeostasis", "n", n, 1)
        self.gamma = check_float("Homeostasis", "gamma", gamma, 0.0)
        self.target = check_float("Homeostasis", "target", target, 0.0, 1.0)
        self.mode = check_choice("Homeostasis", "mode", mode, ("batch", "sequential"))
        self.eta = check_float("Homeostasis", "eta", eta, 0.0, 1.0, low_open=True)
        self.register_buffer("H", torch.zeros(n))
        self.register_buffer("A", torch.full((n,), float(target)))

    def reset(self) -> None:
        """``H <- 0`` (and the running mean back to ``T``), as at the start of each epoch in the paper."""
        self.H.zero_()
        self.A.fill_(self.target)

    @torch.no_grad()
    def update(self, d: torch.Tensor) -> None:
        """Apply one homeostatic step from the targets ``d`` of shape ``(batch, n)``."""
        if d.ndim != 2 or d.shape[1] != self.n:
            raise ValueError(f"Homeostasis.update: d must have shape (batch, {self.n}), got {tuple(d.shape)}")
        if self.mode == "batch":
            self.H.add_(d.mean(0) - self.target, alpha=self.gamma)
        else:
            for row in d:  # samples presented one after another
                self.A.mul_(1.0 - self.eta).add_(self.eta * row)
                self.H += self.gamma * (self.A - self.target)


def homeostasis_checkable(n: int, mode: str = "batch", gamma: float = 0.4, target: float = 0.1, eta: float = 0.6):
    """The homeostatic step of :class:`Homeostasis` as a checkable update (the circuit checked like a rule).

    ``H_i`` is a synapse from a constant cell (``layer "H"``, shape ``(n, 1)``); its change is what
    :meth:`Homeostasis.update` does, run on the drawn state: ``dH_i = gamma (<d_i> - T)`` with
    ``<d_i>`` the batch mean (``mode="batch"``, Liu et al. 2024 Eq. 12) or, sample by sample,
    ``A_i <- eta d_i + (1 - eta) A_i``, ``H_i += gamma (A_i - T)`` (``mode="sequential"``, Eq. 11). Each
    cell reads only its own winners ``d_i`` (delivered by the KWTA circuit) and its own state, so the
    verdict turns on the batch: a batch mean is a statistic over the batch's samples (non-local under
    ``batch="samples"``); the sequential mode is checked under a contract that declares the batch a
    sequence of samples (DESIGN.md section 4).
    """
    from ..locality.contract import CellParam, Checkable, Contract, Layer, Signal, StateSpec, Weight

    check_choice("homeostasis_checkable", "mode", mode, ("batch", "sequential"))
    spec = StateSpec({"output": n, "constant": 1}, (Layer("H", post="output", pre="constant"),),
                     {"d": Signal("output", "KWTA"), "A": CellParam("output"), "H": Weight("H")})
    contract = Contract(f"Homeostasis ({mode})", allows={"post", "weight", "neuron_signal"}, pathways=("KWTA",),
                        batch="samples" if mode == "batch" else "sequence")

    def fn(s):
        h = Homeostasis(n, gamma, target, mode, eta).double()
        h.H.copy_(s["H"][:, 0])
        h.A.copy_(s["A"])
        h.update(s["d"])
        return {"H": (h.H - s["H"][:, 0])[:, None]}

    return Checkable(f"Homeostasis ({'batch mean' if mode == 'batch' else 'sequential'})", spec, {"H": contract}, fn)
