"""The self-defined target of Liu et al. 2024: kWTA winners with homeostasis.

    d = kWTA(y - H)                          winners: the k largest entries of y - H get 1, others 0   (Eq. 1)
    H <- H + gamma (<d> - T)                 homeostasis, T = k / n (adjusted for output dropout)     (Eq. 2)
    d <- (1 - alpha) d + alpha T             optional label smoothing (Eq. 13; EP configs, alpha = 0.3)
    L = 1/(B n) sum_b sum_i (y_bi - d_bi)^2  mean squared error, mean reduction                        (Eq. 3)

``<d>`` is the mean over the mini-batch (``mode="batch"``, Eq. 12) or an exponential moving average
over samples presented one by one (``mode="sequential"``, Eq. 11, rate ``eta``: 0.6 for BP, 0.1 for EP
in the authors' code); in sequential mode each sample's target uses the H left by the one before.

Output dropout: an unscaled Bernoulli(1 - p) mask ``m`` multiplies the output and the target, so a
dropped cell neither wins nor learns for that sample; the target activity then is ``T = (1 - p) k / n``
(``dropout_target="multiply"``, the authors' BP code) or ``k / ((1 - p) n)`` (``"divide"``, their EP code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_bool, check_choice, check_float, check_int
from ..circuits.homeostasis import Homeostasis
from ..circuits.kwta import PATHWAY, kwta


@dataclass(frozen=True)
class SelfDefinedTarget:
    """Unsupervised self-defined target ``d = kWTA(y - H)`` with homeostasis (see module docstring).

    Parameters: ``k`` winners (>= 1 and <= the number of output cells), ``gamma`` >= 0 homeostasis
    rate, ``mode`` ``"batch"`` | ``"sequential"``, ``eta`` in (0, 1] (sequential EMA rate),
    ``reset_each_epoch`` (H <- 0 at the start of every epoch, as in the paper), ``smoothing`` alpha in
    [0, 1), ``dropout_target`` ``"multiply"`` | ``"divide"`` | ``"none"``.
    """

    k: int = 6
    gamma: float = 0.4
    mode: str = "batch"
    eta: float = 0.6
    reset_each_epoch: bool = True
    smoothing: float = 0.0
    dropout_target: str = "multiply"

    needs_labels = False
    pathway = PATHWAY

    def __post_init__(self):
        name = "SelfDefinedTarget"
        check_int(name, "k", self.k, 1)
        check_float(name, "gamma", self.gamma, 0.0)
        check_choice(name, "mode", self.mode, ("batch", "sequential"))
        check_float(name, "eta", self.eta, 0.0, 1.0, low_open=True)
        check_bool(name, "reset_each_epoch", self.reset_each_epoch)
        check_float(name, "smoothing", self.smoothing, 0.0, 1.0, high_open=True)
        check_choice(name, "dropout_target", self.dropout_target, ("multiply", "divide", "none"))

    def target_activity(self, n_out: int, output_dropout: float = 0.0) -> float:
        """``T``: ``k/n`` times ``(1-p)`` (multiply), divided by ``(1-p)`` (divide) or unchanged (none)."""
        t = self.k / n_out
        if self.dropout_target == "multiply":
            t *= 1 - output_dropout
        elif self.dropout_target == "divide":
            t /= 1 - output_dropout
        return min(t, 1.0)

    def init_state(self, n_out: int, output_dropout: float = 0.0) -> Homeostasis:
        """The homeostasis state ``H`` for ``n_out`` output cells."""
        if self.k > n_out:
            raise ValueError(f"SelfDefinedTarget: k must be <= the number of output cells ({n_out}), got {self.k}")
        return Homeostasis(n_out, self.gamma, self.target_activity(n_out, output_dropout), self.mode, self.eta)

    def on_epoch_start(self, state: Homeostasis) -> None:
        """``H <- 0`` at the start of an epoch when ``reset_each_epoch`` (Liu et al. 2024, Algorithm 1, line 5)."""
        if self.reset_each_epoch:
            state.reset()

    @torch.no_grad()
    def decide(self, y: torch.Tensor, state: Homeostasis, mask: torch.Tensor | None = None, labels=None) -> torch.Tensor:
        """Target for outputs ``y (B, n)`` (already masked by output dropout), then update ``H``.

        Returns ``d`` (smoothed and masked); ``state.H`` moves by one homeostatic step (batch mode)
        or one step per sample (sequential mode).
        """
        if self.mode == "batch":
            d = kwta(y, self.k, state.H)
            if mask is not None:
                d = d * mask
            state.update(d)
        else:
            rows = []
            for b in range(y.shape[0]):
                d_b = kwta(y[b : b + 1], self.k, state.H)
                if mask is not None:
                    d_b = d_b * mask[b : b + 1]
                state.update(d_b)
                rows.append(d_b)
            d = torch.cat(rows, 0)
        if self.smoothing:
            d = (1 - self.smoothing) * d + self.smoothing * (self.k / y.shape[1])
            if mask is not None:
                d = d * mask
        return d
