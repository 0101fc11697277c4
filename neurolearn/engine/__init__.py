"""How a training setup is executed (DESIGN.md section 2, ``engine/``).

The *reference* executor (:mod:`neurolearn.engine.reference`) runs what the objectives', credit
methods' and rules' docstrings say, one batch at a time: ``credit.step`` on every batch. *Fast*
executors implement particular combinations faster (for example :mod:`neurolearn.engine.blocked`:
one dense layer trained by plain SGD, several batches sharing one input GEMM and one weight write)
and register for the combinations they support with :func:`register_executor`; each says why it does
not apply to a setup (:meth:`Executor.unsupported`), and :func:`select_executor` falls back to the
reference. Every fast executor is tested equal to the reference, with dropout on: random draws come
from the batch's own generator (:mod:`neurolearn.rng`), so grouping batches cannot change them.

An executor runs one epoch at a time; the weights are current when ``run_epoch`` returns (the only
points where the trainer shows them to callbacks, probes or checkpoints).
"""

from __future__ import annotations

from typing import Callable

from .._validate import ParameterError

_EXECUTORS: list = []


class NonFiniteLoss(ArithmeticError):
    """A batch's loss was not finite: ``batch`` is its index in the epoch."""

    def __init__(self, batch: int, loss: float):
        super().__init__(f"loss {loss} at batch {batch + 1}")
        self.batch, self.loss = batch, loss


class Executor:
    """Runs epochs of a :class:`~neurolearn.train.Trainer`'s setup (see module docstring)."""

    #: the name recipes and reports use (``[training] engine``)
    name = "executor"

    def __init__(self, trainer):
        self.trainer = trainer

    @classmethod
    def unsupported(cls, trainer) -> str | None:
        """Why this executor cannot run ``trainer``'s setup (``None``: it can)."""
        return None

    def prepare(self, x, labels) -> None:
        """Called once per ``fit`` before the first epoch, with the whole training input."""

    def run_epoch(self, epoch: int, x, labels, progress: Callable[[int], None]) -> tuple[float, int]:
        """Train one epoch; returns ``(sum of batch losses times batch sizes, samples)``; calls
        ``progress(n)`` after every ``n`` batches; raises :class:`NonFiniteLoss`."""
        raise NotImplementedError


def register_executor(cls):
    """Class decorator: offer a fast executor (tried in registration order, newest first)."""
    names = [e.name for e in _EXECUTORS]
    if cls.name in names:
        _EXECUTORS[names.index(cls.name)] = cls
    else:
        _EXECUTORS.insert(0, cls)
    return cls


def executors() -> dict:
    """Name -> class of every executor (the reference included)."""
    from .reference import ReferenceExecutor
    from . import blocked, fused  # noqa: F401  (register themselves; the last imported is tried first)

    return {e.name: e for e in _EXECUTORS} | {"reference": ReferenceExecutor}


def select_executor(trainer, engine: str = "auto") -> tuple[type, dict]:
    """The executor for ``trainer``: ``engine="auto"`` takes the first fast one that supports the setup,
    else the reference; a name asks for that one (an error says why it does not apply). Returns
    ``(class, {name: reason not used})``."""
    table = executors()
    if engine != "auto":
        if engine not in table:
            raise ParameterError(f"engine must be 'auto' or one of {', '.join(sorted(table))}, got {engine!r}")
        why = table[engine].unsupported(trainer)
        if why:
            raise ParameterError(f"engine {engine!r} does not support this setup: {why}")
        return table[engine], {}
    reasons = {}
    for cls in _EXECUTORS:
        why = cls.unsupported(trainer)
        if why is None:
            return cls, reasons
        reasons[cls.name] = why
    return table["reference"], reasons
