"""The reference executor: one batch at a time, exactly what the credit method's ``step`` says.

For batch ``b`` of epoch ``e`` (order from :func:`neurolearn.data.batch_indices`, random draws from
:func:`neurolearn.rng.batch_generator` ``(seed, e, b)``):

    x_b, labels_b = objective.present(x[idx_b], labels[idx_b], g_b)
    credit.step(net, x_b, objective, objective_state, credit_state, optimizer, labels_b, g_b)
"""

from __future__ import annotations

import math

from ..data import batch_indices
from ..rng import batch_generator
from . import Executor, NonFiniteLoss


def run_batches(trainer, epoch: int, x, labels, progress, step) -> tuple[float, int]:
    """One epoch of ``trainer``'s batches in the order and with the generators above, each handed to
    ``step(x_b, labels_b, g_b) -> {"loss": ...}`` after the objective's ``present``; returns
    ``(sum of batch losses x batch sizes, samples)`` and raises :class:`NonFiniteLoss` at the first non-finite loss.
    Shared by the executors that differ only in how a batch is computed."""
    t = trainer
    total, n = 0.0, 0
    for b, idx in enumerate(batch_indices(x.shape[0], t.config.batch_size, t.seed, epoch)):
        g = batch_generator(t.seed, epoch, b)
        xb, lb = t.objective.present(x[idx], None if labels is None else labels[idx], g)
        loss = float(step(xb, lb, g)["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLoss(b, loss)
        total += loss * len(idx)
        n += len(idx)
        progress(1)
    return total, n


class ReferenceExecutor(Executor):
    """Every batch through ``credit.step`` (see module docstring)."""

    name = "reference"

    def run_epoch(self, epoch, x, labels, progress):
        t = self.trainer
        return run_batches(t, epoch, x, labels, progress,
                           lambda xb, lb, g: t.credit.step(t.net, xb, t.objective, t.state, t.credit_state, t.optimizer, lb, g))
