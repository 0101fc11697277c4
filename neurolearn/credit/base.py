"""What a credit-assignment method is: a way to deliver the objective's error to every synapse.

A credit-assignment method (``Backprop``, ``EquilibriumProp``, a user's ``FeedbackAlignment`` ...) is
a frozen, validated description registered under kind ``"credit"``
(:func:`neurolearn.describe.register`) with

    init_state(net, generator) -> dict            its own state (feedback matrices, solver counts):
                                                  checkpointed and restored by the trainer, which
                                                  never looks inside (tensors and JSON-able values)
    check_setup(net, objective, optimizer_name)   reject a combination it cannot train, naming why
    on_epoch_start(state, epoch)                  before every epoch (schedules over epochs)
    step(net, x, objective, objective_state, state, optimizer, labels=None, generator=None) -> {"loss": float}
                                                  one training step on batch x: run the network, ask
                                                  the objective for its error, turn it into one
                                                  update per layer through its plasticity rule and
                                                  the layer protocol, apply it with the optimiser
    respond(net, x) -> y                          the trained network's output (for evaluation)
    checkable(sizes, ...) -> Checkable            the same per-layer update as a pure function of the
                                                  recorded cell activities, for the locality checker

Random draws of a step (dropout masks, the sign of beta) come from ``generator``, which the trainer
keys by (seed, epoch, batch) (:mod:`neurolearn.rng`). A credit method never has a branch for a fast
path: fast executors (:mod:`neurolearn.engine`) implement the combinations they support themselves and
are tested equal to ``step``.
"""

from __future__ import annotations

import torch

from ..describe import Description
from ..locality.contract import Checkable


class CreditMethod(Description):
    """Base of credit-assignment methods (see module docstring)."""

    def init_state(self, net, generator: torch.Generator | None = None) -> dict:
        """The method's state for ``net`` (empty by default)."""
        return {}

    def on_epoch_start(self, state: dict, epoch: int) -> None:
        """Called by the trainer before epoch ``epoch`` (0-based) with the method's state (a schedule over
        epochs, e.g. greedy layer-wise training, reads the epoch here); nothing by default."""

    def check_setup(self, net, objective, optimizer: str = "sgd") -> None:
        """Raise a :class:`~neurolearn._validate.ParameterError` if this method cannot train ``net`` on ``objective``."""

    def spiking_support(self, net) -> str | None:
        """Why ``net`` trained by this method cannot be converted to a spiking network (``None``: it can):
        the conversion (:mod:`neurolearn.sim.convert`) takes dense feed-forward networks."""
        if not getattr(net, "dense_only", False):
            return "the spiking conversion takes dense networks only"
        return None

    @torch.no_grad()
    def respond(self, net, x: torch.Tensor) -> torch.Tensor:
        """Output of the trained feed-forward network (no dropout): ``net(x)``."""
        return net(x)

    def step(self, net, x, objective, objective_state, state: dict, optimizer, labels=None, generator=None) -> dict:
        """One training step (see module docstring)."""
        raise NotImplementedError

    def checkable(self, sizes, pathway: str = "target", output_activation: str = "hardsigmoid",
                  hidden_activation: str = "relu") -> Checkable:
        """The training step's update on an MLP of ``sizes`` as a checkable pure function."""
        raise NotImplementedError


def mse(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``L = 1/(B n) sum (y - d)^2`` -- the loss of Liu et al. 2024, Eq. 3 (mean reduction)."""
    return ((y - d) ** 2).mean()
