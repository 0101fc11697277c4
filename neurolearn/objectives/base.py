"""What an objective is: the error at the output of the network (DESIGN.md section 3).

An objective is a frozen, registered description (kind ``"objective"``) with

    error(y, state, mask=None, labels=None) -> OutputError(loss, grad, target)

where ``y`` (batch, n_out) is the output the network produced (already multiplied by the output
dropout mask ``m``), ``loss`` the scalar loss ``L`` and ``grad = dL/dy`` its gradient with respect to
the output, the signal a credit method carries to every synapse. A *target* objective is the special
case ``L = 1/(B n) sum (y - d)^2`` (mean squared error to a target ``d`` it decides), so

    dL/dy = 2/(B n) (y - d),

and it also returns ``d`` (equilibrium propagation nudges the output toward it). Objectives may keep
state (the homeostatic thresholds of the self-defined target), made by ``init_state`` and checkpointed
by the trainer, and may declare context beyond the current batch: :meth:`Objective.present` turns the
batch into what the network is shown (two augmented views of each image for a loss over pairs), and a
state may hold a short-term memory of earlier representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..describe import Description


@dataclass
class OutputError:
    """``loss`` (a 0-d tensor), ``grad = dL/dy`` (the shape of ``y``) and, for target objectives, ``target``."""

    loss: torch.Tensor
    grad: torch.Tensor
    target: torch.Tensor | None = None


class Objective(Description):
    """Base of objectives (see module docstring)."""

    #: whether ``error`` needs the batch's labels
    needs_labels: ClassVar[bool] = False
    #: the pathway through which the error reaches the output cells (locality contracts)
    pathway: ClassVar[str] = "error"
    #: whether ``error`` returns a target ``d`` (required by equilibrium propagation's nudge)
    gives_target: ClassVar[bool] = False

    def init_state(self, n_out: int, output_dropout: float = 0.0):
        """The objective's state for ``n_out`` output cells (``None``: stateless)."""
        return None

    def on_epoch_start(self, state) -> None:
        """Called by the trainer at the start of every epoch."""

    def circuit_checkables(self) -> list:
        """``[(label, factory sizes -> Checkable, n_populations)]`` of the circuits this objective runs
        (checked for locality beside the training step); none by default."""
        return []

    def present(self, x: torch.Tensor, labels, generator: torch.Generator | None = None):
        """What the network is shown for a batch ``x``: ``(x, labels)`` unchanged by default; an objective
        over pairs returns e.g. two augmented views stacked (``2B`` rows) and sees them back in ``error``."""
        return x, labels

    def error(self, y: torch.Tensor, state, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """The loss and ``dL/dy`` for outputs ``y`` (see module docstring)."""
        raise NotImplementedError


class TargetObjective(Objective):
    """An objective that decides a target ``d`` and is the mean squared error to it (module docstring)."""

    gives_target: ClassVar[bool] = True
    pathway: ClassVar[str] = "target"

    def decide(self, y: torch.Tensor, state, mask: torch.Tensor | None = None, labels=None) -> torch.Tensor:
        """The target ``d`` for outputs ``y`` (zero where ``mask`` drops a cell); may update ``state``."""
        raise NotImplementedError

    def error(self, y: torch.Tensor, state, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``L = 1/(B n) |y - d|^2``, ``dL/dy = 2/(B n) (y - d)``, ``d`` from :meth:`decide` (Liu et al. 2024, Eq. 3)."""
        d = self.decide(y, state, mask, labels)
        diff = y - d
        n = diff.numel()
        return OutputError(loss=(diff * diff).sum() / n, grad=diff * (2.0 / n), target=d)
