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

What moves ``H`` (``homeostasis_from``): ``"winners"``, the masked kWTA winners ``m d`` before
smoothing (Eq. 2 as written), or ``"target"``, the smoothed and masked target
``m ((1 - alpha) d + alpha k / n)`` that the network is nudged toward, as the authors' EP code does
(``ep/train_test.py``, ``train_unsupervised_ep``: ``homeo += gamma (mean(targets) - T)`` after smoothing
and dropout). With smoothing alpha the winners then move ``H`` by ``(1 - alpha) gamma`` per win instead
of ``gamma`` (0.21 instead of 0.3 for the EP recipe). Without smoothing both are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import ParameterError
from ..circuits.homeostasis import Homeostasis
from ..circuits.kwta import PATHWAY, kwta
from ..describe import param, register
from .base import TargetObjective

HOMEOSTASIS_FROM = ("winners", "target")


@register("objective", "self_defined")
@dataclass(frozen=True)
class SelfDefinedTarget(TargetObjective):
    """Unsupervised self-defined target ``d = kWTA(y - H)`` with homeostasis (see module docstring).

    Parameters: ``k`` winners (>= 1 and <= the number of output cells), ``gamma`` >= 0 homeostasis
    rate, ``mode`` ``"batch"`` | ``"sequential"``, ``eta`` in (0, 1] (sequential EMA rate),
    ``reset_each_epoch`` (H <- 0 at the start of every epoch, as in the paper), ``smoothing`` alpha in
    [0, 1), ``dropout_target`` ``"multiply"`` | ``"divide"`` | ``"none"``, ``homeostasis_from``
    ``"winners"`` | ``"target"`` (what moves ``H``: the winners, or the smoothed target as in the authors' EP code).
    """

    k: int = param(6, low=1, help="winners of the kWTA competition (<= output cells)")
    gamma: float = param(0.4, low=0.0, help="homeostasis rate: H <- H + gamma (<d> - T)")
    mode: str = param("batch", choices=("batch", "sequential"), help="<d>: mini-batch mean or per-sample EMA")
    eta: float = param(0.6, low=0.0, high=1.0, low_open=True, help="EMA rate of the sequential mode")
    reset_each_epoch: bool = param(True, help="H <- 0 at the start of every epoch (the paper)")
    smoothing: float = param(0.0, low=0.0, high=1.0, high_open=True, help="label smoothing alpha of the target")
    dropout_target: str = param("multiply", choices=("multiply", "divide", "none"),
                                help="target activity T = (1-p) k/n, k/((1-p) n) or k/n under output dropout p")
    homeostasis_from: str = param("winners", choices=HOMEOSTASIS_FROM,
                                  help="H moves with the masked winners or with the smoothed masked target (authors' EP code)")

    needs_labels = False
    pathway = PATHWAY

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
            raise ParameterError(f"SelfDefinedTarget: k must be <= the number of output cells ({n_out}), got {self.k}")
        return Homeostasis(n_out, self.gamma, self.target_activity(n_out, output_dropout), self.mode, self.eta)

    def circuit_checkables(self) -> list:
        """The homeostasis circuit that feeds the kWTA target (:func:`~neurolearn.circuits.homeostasis_checkable`)."""
        from ..circuits import homeostasis_checkable

        return [("homeostasis", lambda s: homeostasis_checkable(s[0], self.mode, self.gamma, 0.1, self.eta), 1)]

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
        smooth_first = self.homeostasis_from == "target"  # H moves with the smoothed target
        if self.mode == "batch":
            d = kwta(y, self.k, state.H)
            if mask is not None:
                d = d * mask
            if smooth_first:
                d = self._smooth(d, mask)
            state.update(d)
        else:
            rows = []
            for b in range(y.shape[0]):
                m_b = None if mask is None else mask[b : b + 1]
                d_b = kwta(y[b : b + 1], self.k, state.H)
                if m_b is not None:
                    d_b = d_b * m_b
                if smooth_first:
                    d_b = self._smooth(d_b, m_b)
                state.update(d_b)
                rows.append(d_b)
            d = torch.cat(rows, 0)
        return d if smooth_first else self._smooth(d, mask)

    def _smooth(self, d: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Label smoothing ``m ((1 - alpha) d + alpha k / n)`` (``d`` itself when alpha = 0)."""
        if self.smoothing:
            d = (1 - self.smoothing) * d + self.smoothing * (self.k / d.shape[1])
            if mask is not None:
                d = d * mask
        return d
