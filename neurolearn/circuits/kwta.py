"""k-winners-take-all (kWTA): the competition that selects the self-defined target.

Rate realisation (this module): exact top-k with per-cell thresholds,

    d_i = 1  if  v_i - H_i  is among the k largest entries of  v - H,   else 0,      (Liu et al. 2024, Eq. 1)

where ``v`` is the output activity and ``H`` the homeostatic threshold of each cell. Exactly ``k``
cells win; among exactly tied scores the choice is ``torch.topk``'s (deterministic for a given input
on a given device). A stable sort would pin ties to the lower index but costs 30 times more, and
ties between float scores minus per-cell thresholds are rare. The spiking realisation (excitatory cells with
lateral inhibition through an inhibitory
population, adaptive thresholds for ``H``) lives in :mod:`neurolearn.circuits.kwta_spiking`.

In a locality contract the winners are a ``neuron_signal`` delivered to each output cell through
the declared pathway ``"KWTA"``: the circuit reads every cell (that is what inhibition does), each
cell receives one bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_int
from ..describe import Description, param, register

PATHWAY = "KWTA"


def kwta(v: torch.Tensor, k: int, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """Binary k-winners-take-all mask of ``v - threshold`` along the last axis.

    ``d_i = 1 if v_i - H_i in top_k(v - H) else 0`` (Liu et al. 2024, Eq. 1). ``v``: ``(..., n)``;
    ``threshold``: broadcastable to ``v`` (``None`` means 0).
    Returns a tensor of ``v``'s dtype with exactly ``k`` ones per row (ties: see module docstring).
    """
    n = v.shape[-1]
    check_int("kwta", "k", k, 1, n)
    score = v if threshold is None else v - threshold
    idx = torch.topk(score, k, dim=-1, sorted=False).indices
    d = torch.zeros_like(score)
    d.scatter_(-1, idx, 1.0)
    return d


@register("circuit", "kwta")
@dataclass(frozen=True)
class KWTA(Description):
    """The kWTA circuit (rate realisation): ``d = kWTA(v - H)`` with ``k`` winners.

    From Liu et al. 2024 (Eq. 1; Majani et al. 1988). ``KWTA(k)(v, H)`` returns the winner mask.
    """

    k: int = param(1, low=1, help="winners")

    def __call__(self, v: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        """Winner mask ``d_i = 1 if v_i - H_i in top_k(v - H) else 0`` (Liu et al. 2024, Eq. 1)."""
        if self.k > v.shape[-1]:
            raise ValueError(f"KWTA: k must be <= the number of cells ({v.shape[-1]}), got {self.k}")
        return kwta(v, self.k, threshold)
