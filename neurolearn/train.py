"""Training loop: epochs of mini-batches, learning-rate schedule, checkpoints, resume, divergence.

Per epoch ``e`` (Liu et al. 2024, Algorithm 1): the objective's epoch hook runs (the self-defined
target resets ``H <- 0``), the learning rate of every layer is ``lr_l * f(e)`` with the linear schedule
``f(e) = 1 + (final_lr_factor - 1) e / E`` (torch's ``LinearLR`` from 1 to ``final_lr_factor``), and
an executor (:mod:`neurolearn.engine`) trains the epoch's batches -- the reference executor calls
``credit.step`` on every batch; a fast one, chosen automatically for the combinations it supports, is
tested equal to it. Batches come from :func:`neurolearn.data.batch_indices` and every random draw
from the batch's generator keyed by (seed, epoch, batch) (:mod:`neurolearn.rng`), so ``block``,
the executor and resuming cannot change results.

After every epoch the weights are current: callbacks run, a checkpoint is written atomically (weights,
objective state, the credit method's state, optimiser state). A loss or weight that stops being finite
restores the network in memory to its state at the start of the epoch and raises
:class:`DivergenceError`, which says at which epoch and batch, whether a checkpoint exists, and that
the input was checked finite (so the update produced the first non-finite value); nothing is written,
so the last good checkpoint stays intact. ``load_checkpoint`` continues after the last checkpoint and
reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ._validate import ParameterError
from .data import batch_indices
from .describe import Description, param
from .engine import NonFiniteLoss, select_executor
from .rng import named_generator
from .runs import checkpoint_exists, load_checkpoint_files, save_checkpoint_files



@dataclass(frozen=True)
class TrainingConfig(Description):
    """The training settings (recipe section ``[training]``), validated when made; every default filled.

    ``TrainingConfig(lr=0)`` raises ``TrainingConfig: lr must be a finite number > 0 or a list of them, got 0``.
    """

    epochs: int = param(10, low=0, help="epochs to train")
    batch_size: int = param(16, low=1, help="samples per mini-batch")
    optimizer: str = param("sgd", choices=("sgd", "adam"), help="plain SGD or Adam (torch.optim)")
    lr: float = param(8.0, "float_or_floats", low=0.0, low_open=True, help="learning rate, or one per layer")
    schedule: str = param("linear", choices=("linear", "none"), help="linear decay to final_lr_factor over the epochs")
    final_lr_factor: float = param(5e-4, low=0.0, high=1.0, help="lr factor reached at the last epoch")
    block: int = param(8, low=1, help="batches per weight write of the blocked executor (1: off)")
    threads: int = param(0, low=0, help="torch CPU threads (0: torch's default)")
    device: str = param("cpu", help="torch device: 'cpu', 'cuda', 'cuda:0', 'mps'")
    engine: str = param("auto", help="executor: 'auto' (fastest that supports the setup), 'reference', 'blocked'")
    max_minutes: float = param(0.0, low=0.0, help="wall-clock budget: training stops after the first epoch that ends "
                                                 "past this many minutes of training time, and the run records the epochs "
                                                 "reached (0: no limit)")

    def validate(self):
        cpus = os.cpu_count() or 1
        if self.threads > cpus:
            raise ParameterError(f"TrainingConfig: threads must be an integer in [0, {cpus}] (this machine's CPUs), "
                                 f"got {self.threads}")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ParameterError(f"TrainingConfig: device must be a torch device such as 'cpu', 'cuda' or "
                                 f"'cuda:0', got {self.device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ParameterError(f"TrainingConfig: device must be 'cpu' on this machine (torch sees no CUDA device), "
                                 f"got {self.device!r}")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ParameterError(f"TrainingConfig: device must be 'cpu' on this machine (no MPS device), got {self.device!r}")
        from .engine import executors

        names = ("auto",) + tuple(sorted(executors()))
        if self.engine not in names:
            raise ParameterError(f"TrainingConfig: engine must be one of {', '.join(repr(n) for n in names)}, "
                                 f"got {self.engine!r}")

    def lrs(self, n_layers: int) -> list[float]:
        """One learning rate per layer (a single value is shared)."""
        lrs = list(self.lr) if isinstance(self.lr, tuple) else [self.lr]
        if len(lrs) == 1:
            return lrs * n_layers
        if len(lrs) != n_layers:
            raise ParameterError(f"TrainingConfig: lr must be one number or one per layer ({n_layers}), got {lrs}")
        return lrs


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or weight; the network in memory was restored (see module doc)."""


class TrainingInputError(ValueError):
    """The input given to :meth:`Trainer.fit` has the wrong type, shape, dtype, size or values."""


def make_optimizer(net, config: TrainingConfig) -> torch.optim.Optimizer:
    """SGD or Adam with one parameter group per layer (per-layer learning rates)."""
    lrs = config.lrs(net.n_layers)
    groups = [{"params": list(layer.parameters()), "lr": lr, "base_lr": lr} for layer, lr in zip(net.layers, lrs)]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0])
    params = [p for g in groups for p in g["params"]]
    # the fused Adam kernel (same update up to rounding) is 7x faster than the for-loop one on the CPU for
    # a large layer (18.8M weights: measured in docs/results.md); it takes floating-point CPU/CUDA tensors
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(groups, lr=lrs[0], fused=fused)


def lr_factor(epoch: int, config: TrainingConfig) -> float:
    """Linear schedule from 1 at epoch 0 to ``final_lr_factor`` at the last epoch (or 1 without schedule)."""
    if config.schedule == "none" or config.epochs <= 1:
        return 1.0
    frac = min(epoch, config.epochs) / config.epochs
    return 1.0 + (config.final_lr_factor - 1.0) * frac


def as_config(training) -> TrainingConfig:
    """A :class:`TrainingConfig` from one, from a dict of its keys (missing keys take their defaults;
    an unknown key or a bad value is an error naming it) or from ``None`` (every default)."""
    if isinstance(training, TrainingConfig):
        return training
    if training is None:
        return TrainingConfig()
    if not isinstance(training, dict):
        raise ParameterError(f"Trainer: training must be a TrainingConfig or a dict of its keys, got {type(training).__name__}")
    return TrainingConfig.from_values(training, "Trainer: training: ")


class Trainer:
    """Trains ``net`` with ``credit`` on ``objective`` (see module docstring).

    ``training``: a :class:`TrainingConfig` (or a dict of its keys); ``out_dir`` (optional) receives the
    checkpoints; ``progress`` shows a progress bar of batches; ``callbacks`` are called as
    ``callback(trainer)`` after every epoch, when the weights are current.
    """

    def __init__(self, net, objective, credit, training=None, seed: int = 0, out_dir: str | Path | None = None,
                 progress: bool = True, callbacks: Sequence[Callable] = ()):
        self.config = as_config(training)
        self.net, self.objective, self.credit = net, objective, credit
        self.seed = seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.callbacks = list(callbacks)
        self.device = next(net.parameters()).device
        credit.check_setup(net, objective, self.config.optimizer)
        self.state = objective.init_state(net.sizes[-1], net.dropout[-1])
        if isinstance(self.state, torch.nn.Module):
            self.state.to(self.device)
        self.credit_state = credit.init_state(net, named_generator(seed, "credit"))
        for k, v in list(self.credit_state.items()):
            if torch.is_tensor(v):
                self.credit_state[k] = v.to(self.device)
        self.optimizer = make_optimizer(net, self.config)
        self.executor_class, self.executor_reasons = select_executor(self, self.config.engine)
        self.epoch = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.samples_seen = 0
        #: ``None``, or ``{"epochs_done", "epochs_planned", "max_minutes"}`` when the time budget stopped training
        self.stopped_early: dict | None = None

    @property
    def training(self) -> dict:
        """The training settings as a dict (recipe section ``[training]``)."""
        return self.config.values()

    # ------------------------------------------------------------------ checkpoints
    def _tensors(self) -> dict:
        t = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if isinstance(self.state, torch.nn.Module):
            t.update({f"objective.{k}": v for k, v in self.state.state_dict().items()})
        t.update({f"credit.{k}": v for k, v in self.credit_state.items() if torch.is_tensor(v)})
        for i, st in self.optimizer.state_dict()["state"].items():
            for name, v in st.items():
                if v is None:
                    continue
                t[f"optim.{i}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
        return t

    def _info(self) -> dict:
        return {"epoch": self.epoch, "history": self.history, "train_seconds": self.train_seconds,
                "samples_seen": self.samples_seen,
                "credit": {k: v for k, v in self.credit_state.items() if not torch.is_tensor(v)}}

    def save_checkpoint(self) -> None:
        """Write weights, objective, credit and optimiser state with a manifest of their checksums
        (atomic, manifest last; refused if a tensor is not finite; no-op without ``out_dir``)."""
        if self.out_dir is None:
            return
        save_checkpoint_files(self.out_dir, self._tensors(), self._info())

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint of ``out_dir`` after verifying its checksums and finiteness
        (:class:`~neurolearn.runs.CheckpointError` otherwise); ``False`` if there is none."""
        if self.out_dir is None or not checkpoint_exists(self.out_dir):
            return False
        t, info = load_checkpoint_files(self.out_dir)
        try:
            self._restore(t, info)
        except (KeyError, RuntimeError, ValueError) as e:
            from .runs import CheckpointError

            raise CheckpointError(f"checkpoint in {self.out_dir} does not fit this setup: {e}") from None
        return True

    def _restore(self, t: dict, info: dict) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        if isinstance(self.state, torch.nn.Module):
            self.state.load_state_dict({k[10:]: v for k, v in t.items() if k.startswith("objective.")})
        for k, v in t.items():
            if k.startswith("credit."):
                self.credit_state[k[7:]] = v.to(self.device)
        for k, v in info.get("credit", {}).items():
            old = self.credit_state.get(k)
            if isinstance(old, dict):  # keep the object's type (e.g. a Counter)
                old.clear()
                old.update(v)
            else:
                self.credit_state[k] = v
        sd = self.optimizer.state_dict()
        state: dict = {}
        for k, v in t.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        sd["state"] = state
        self.optimizer.load_state_dict(sd)
        self.epoch = info["epoch"]
        self.history = info["history"]
        self.train_seconds = info["train_seconds"]
        self.samples_seen = info["samples_seen"]

    def _snapshot(self) -> tuple:
        return ({k: v.detach().clone() for k, v in self._tensors().items()}, copy.deepcopy(self._info()))

    # ------------------------------------------------------------------ training
    def check_input(self, x, labels=None):
        """``(x, labels)`` ready for training, or :class:`TrainingInputError` naming what is wrong: ``x`` must
        be a non-empty floating-point tensor of the network's input shape with finite values; ``labels`` one
        integer per sample when the objective needs them."""
        if not torch.is_tensor(x):
            raise TrainingInputError(f"fit: x must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TrainingInputError(f"fit: x must be a floating-point tensor (e.g. torch.float32), got {x.dtype}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise TrainingInputError(f"fit: x must be a non-empty batch of samples (batch, ...), got shape {tuple(x.shape)}")
        try:
            self.net.check_input(x[:1])
        except ValueError as e:
            raise TrainingInputError(f"fit: {e}") from None
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero()[:5].squeeze(1).tolist()
            raise TrainingInputError(f"fit: x must be finite; samples {bad} hold NaN or Inf")
        if self.objective.needs_labels and labels is None:
            raise TrainingInputError(f"fit: {type(self.objective).__name__} needs labels (fit(x, labels))")
        if labels is not None:
            if not torch.is_tensor(labels) or labels.ndim != 1 or labels.shape[0] != x.shape[0] or labels.is_floating_point():
                raise TrainingInputError(f"fit: labels must be an integer tensor of shape ({x.shape[0]},), got "
                                         f"{tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__}")
            if labels.min() < 0:
                raise TrainingInputError(f"fit: labels must be >= 0, got {int(labels.min())}")
        x = x.to(self.device, self.net.layers[0].weight.dtype)
        return x, (labels.to(self.device) if labels is not None else None)

    def fit(self, x: torch.Tensor, labels: torch.Tensor | None = None, epochs: int | None = None) -> list[dict]:
        """Train until ``epochs`` (default: the configuration's) epochs are done; returns the history."""
        epochs = self.config.epochs if epochs is None else epochs
        x, labels = self.check_input(x, labels)
        n_batches = len(batch_indices(x.shape[0], self.config.batch_size, self.seed, 0, shuffle=False))
        executor = self.executor_class(self)
        executor.prepare(x, labels)
        bar = tqdm(total=epochs * n_batches, initial=min(self.epoch, epochs) * n_batches, desc="training",
                   unit="batch", disable=not self.progress, dynamic_ncols=True, leave=False)
        try:
            while self.epoch < epochs:
                self._set_lr(self.epoch)
                self.objective.on_epoch_start(self.state)
                self.credit.on_epoch_start(self.credit_state, self.epoch)
                good = self._snapshot()
                bar.set_description(f"training epoch {self.epoch + 1}/{epochs}")
                t0 = time.perf_counter()
                try:
                    total, n = executor.run_epoch(self.epoch, x, labels, bar.update)
                except NonFiniteLoss as e:
                    self._restore(*good)
                    raise DivergenceError(self._divergence(f"the loss became {e.loss}", e.batch, n_batches)) from None
                self.train_seconds += time.perf_counter() - t0
                bad = [name for name, p in self.net.named_parameters() if not torch.isfinite(p).all()]
                if bad:
                    self._restore(*good)
                    raise DivergenceError(self._divergence(f"weights {', '.join(bad)} stopped being finite", None,
                                                           n_batches))
                self.samples_seen += n
                self.epoch += 1
                self.history.append({"epoch": self.epoch, "loss": total / max(n, 1)})
                self.save_checkpoint()
                bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
                for cb in self.callbacks:
                    cb(self)
                budget = self.config.max_minutes
                if budget and self.train_seconds >= 60.0 * budget and self.epoch < epochs:
                    self.stopped_early = {"epochs_done": self.epoch, "epochs_planned": epochs, "max_minutes": budget}
                    warnings.warn(f"training stopped after epoch {self.epoch} of {epochs}: the time budget "
                                  f"[training] max_minutes = {budget} was reached ({self.train_seconds / 60:.1f} min); "
                                  "the run goes on with the network of that epoch", stacklevel=2)
                    break
        finally:
            bar.close()
        return self.history

    def _divergence(self, what: str, batch: int | None, n_batches: int) -> str:
        where = f"epoch {self.epoch + 1}" + (f", batch {batch + 1} of {n_batches}" if batch is not None else "")
        if self.out_dir is not None and checkpoint_exists(self.out_dir):
            kept = f"the last good checkpoint (epoch {self.epoch}) is kept in {self.out_dir}"
        elif self.out_dir is not None:
            kept = f"no checkpoint exists yet in {self.out_dir} (the divergence came in the first epoch)"
        else:
            kept = "no checkpoint folder was given"
        return (f"training diverged at {where}: {what}. The input was checked finite, so the update produced the "
                f"first non-finite value (try a smaller learning rate). The network in memory is restored to its "
                f"state at the start of epoch {self.epoch + 1}; {kept}.")

    def _set_lr(self, epoch: int) -> None:
        f = lr_factor(epoch, self.config)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    @property
    def executor(self) -> str:
        """Name of the executor that runs this setup."""
        return self.executor_class.name

    @property
    def seconds_per_1000(self) -> float:
        """Training seconds per 1,000 samples so far."""
        return 1000 * self.train_seconds / max(self.samples_seen, 1)
