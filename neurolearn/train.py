"""Training loop: epochs of mini-batches, learning-rate schedule, checkpoints, resume, divergence.

Per epoch ``e`` (Liu et al. 2024, Algorithm 1): the objective's state is reset if it says so
(``H <- 0``), the learning rate of every layer is ``lr_l * f(e)`` with the linear schedule
``f(e) = 1 + (final_lr_factor - 1) e / E`` (torch's ``LinearLR`` from 1 to ``final_lr_factor``),
the batches come from :func:`neurolearn.data.batch_indices` (deterministic per seed and epoch), and
each batch is one ``credit.step``. For a one-layer network trained by plain SGD, ``block`` batches
share one input GEMM and one weight write (:class:`~neurolearn.plasticity.base.DeferredLayer`):
the same updates, exactly, with two large matrix products per block instead of two small ones per batch.
Input cells that are zero in every training sample (MNIST's border: 111 of 784 pixels) contribute
nothing to any current and receive no update, so the blocks of an epoch work on a compact copy of the
other columns of ``W``, written back at the end of the epoch (input dropout is then drawn for the
active columns only: dropping a silent input changes nothing). Columns active in fewer than
:data:`RARE_FREQUENCY` of the samples are kept apart (their weights transposed) and enter the block
products as sparse matrices (:func:`split_columns`). After every epoch a checkpoint is written atomically; a loss or
weight that stops being finite stops the run with :class:`DivergenceError` *before* anything is
written, so the last good checkpoint stays intact. ``resume=True`` continues after the last
checkpoint and reproduces the uninterrupted run (same batches, same random masks).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import batch_indices
from .plasticity.base import DeferredLayer, _plain_sgd
from .runs import load_tensors, save_tensors, write_json

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_INFO = "checkpoint.json"


#: largest fraction of active input columns for which one-layer blocks run on a compact weight copy
COMPACT_COLUMNS = 0.95


def active_columns(x: torch.Tensor) -> torch.Tensor | None:
    """Indices of the input columns that are non-zero in some row of ``x`` (padded with silent ones
    to a multiple of 16), or ``None`` when more than :data:`COMPACT_COLUMNS` of them are active (then a
    compact copy saves too little)."""
    active = x.ne(0).any(0)
    n = int(active.sum())
    if n > COMPACT_COLUMNS * x.shape[1]:
        return None
    # a multiple of 16 columns keeps the compact matrix's rows aligned (an odd width makes the
    # in-place weight GEMM markedly slower); the padding columns are silent ones
    pad = min(-n % 16, x.shape[1] - n)
    if pad:
        active[(~active).nonzero().squeeze(1)[:pad]] = True
    return active.nonzero().squeeze(1)


#: input columns active in fewer than this fraction of the samples go through sparse products in
#: one-layer blocks (on MNIST: 288 of the 688 active pixels, holding 2% of the nonzero inputs)
RARE_FREQUENCY = 0.05


def split_columns(x: torch.Tensor, cols: torch.Tensor) -> int:
    """Reorder ``cols`` in place, frequently active input columns first, and return how many of them
    the dense GEMMs take (a multiple of 16); the rest, active in fewer than :data:`RARE_FREQUENCY` of
    the rows of ``x``, go through sparse products (:class:`DeferredLayer` ``sparse_weight_t``).
    Returns ``len(cols)`` (no split) when fewer than 16 columns are rare."""
    freq = x[:, cols].ne(0).float().mean(0)
    order = freq.argsort(descending=True, stable=True)
    cols.copy_(cols[order])
    n_dense = int((freq >= RARE_FREQUENCY).sum())
    n_dense = min(n_dense + (-n_dense % 16), len(cols))
    return len(cols) if len(cols) - n_dense < 16 else n_dense


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or weight; the last good checkpoint was kept."""


def make_optimizer(net, training: dict) -> torch.optim.Optimizer:
    """SGD or Adam with one parameter group per layer (per-layer learning rates)."""
    lrs = training["lr"] if isinstance(training["lr"], list) else [training["lr"]]
    if len(lrs) == 1:
        lrs = lrs * net.n_layers
    groups = [{"params": list(layer.parameters()), "lr": float(lr), "base_lr": float(lr)} for layer, lr in zip(net.layers, lrs)]
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0])
    return torch.optim.Adam(groups, lr=lrs[0])


def lr_factor(epoch: int, training: dict) -> float:
    """Linear schedule from 1 at epoch 0 to ``final_lr_factor`` at the last epoch (or 1 without schedule)."""
    if training["schedule"] == "none" or training["epochs"] <= 1:
        return 1.0
    frac = min(epoch, training["epochs"]) / training["epochs"]
    return 1.0 + (training["final_lr_factor"] - 1.0) * frac


class Trainer:
    """Trains ``net`` with ``credit`` on ``objective`` (see module docstring).

    ``out_dir`` (optional) receives the checkpoints; ``progress`` shows a progress bar.
    """

    def __init__(self, net, objective, credit, training: dict, seed: int = 0, out_dir: str | Path | None = None,
                 progress: bool = True):
        self.net, self.objective, self.credit = net, objective, credit
        self.training, self.seed = training, seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.state = objective.init_state(net.sizes[-1], net.dropout[-1])
        if isinstance(self.state, torch.nn.Module):
            self.state.to(next(net.parameters()).device)
        self.optimizer = make_optimizer(net, training)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.samples_seen = 0

    # ------------------------------------------------------------------ checkpoints
    def _tensors(self) -> dict:
        t = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if isinstance(self.state, torch.nn.Module):
            t.update({f"objective.{k}": v for k, v in self.state.state_dict().items()})
        t["generator"] = self.generator.get_state()
        for i, st in self.optimizer.state_dict()["state"].items():
            for name, v in st.items():
                if v is None:
                    continue
                t[f"optim.{i}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
        return t

    def save_checkpoint(self) -> None:
        """Write weights, objective state, optimiser state and RNG state (atomic; no-op without out_dir)."""
        if self.out_dir is None:
            return
        save_tensors(self.out_dir / CHECKPOINT, self._tensors())
        write_json(self.out_dir / CHECKPOINT_INFO, {
            "epoch": self.epoch, "history": self.history, "train_seconds": self.train_seconds,
            "samples_seen": self.samples_seen,
        })

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint of ``out_dir``; ``False`` if there is none."""
        if self.out_dir is None or not (self.out_dir / CHECKPOINT).exists():
            return False
        t = load_tensors(self.out_dir / CHECKPOINT)
        info = json.loads((self.out_dir / CHECKPOINT_INFO).read_text())
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        if isinstance(self.state, torch.nn.Module):
            self.state.load_state_dict({k[10:]: v for k, v in t.items() if k.startswith("objective.")})
        self.generator.set_state(t["generator"])
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
        return True

    # ------------------------------------------------------------------ training
    def fit(self, x: torch.Tensor, labels: torch.Tensor | None = None, epochs: int | None = None) -> list[dict]:
        """Train until ``epochs`` (default: the recipe's) epochs are done; returns the history."""
        epochs = self.training["epochs"] if epochs is None else epochs
        bs = self.training["batch_size"]
        bar = tqdm(total=epochs, initial=self.epoch, desc="training", unit="epoch", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        # the columns of input cells active somewhere in x (one-layer blocks work on those only)
        cols = active_columns(x) if self.deferrable and self.training.get("block", 1) > 1 else None
        n_dense = None if cols is None else (  # frequent columns first; sparse products measured on the CPU only
            split_columns(x, cols) if x.device.type == "cpu" else len(cols))
        x_active = x[:, cols].contiguous() if cols is not None else x  # the blocks read these columns only
        try:
            while self.epoch < epochs:
                self._set_lr(self.epoch)
                self.objective.on_epoch_start(self.state)
                t0 = time.perf_counter()
                total, n = 0.0, 0
                batches = batch_indices(x.shape[0], bs, self.seed, self.epoch)
                block = self.training.get("block", 1) if self.deferrable else 1
                compact = compact_t = None
                if block > 1 and cols is not None:  # a compact copy of the active columns' weights
                    W = self.net.layers[0].weight.detach()
                    compact = W[:, cols[:n_dense]].contiguous()
                    if n_dense < len(cols):  # the rare columns' weights, transposed for the sparse products
                        compact_t = W[:, cols[n_dense:]].T.contiguous()
                for start in range(0, len(batches), block):
                    group = batches[start : start + block]
                    defer, masks = None, [None] * len(group)
                    if block == 1:
                        inputs = [x[idx] for idx in group]
                    else:  # one draw of the block's dropout masks, one input GEMM (DeferredLayer)
                        rows = [len(idx) for idx in group]
                        block_x = self.net._drop(x_active[torch.cat(group)], 0, self.generator)
                        out_masks = self.net.output_mask(block_x.shape[0], self.generator, block_x.device)
                        inputs = list(block_x.split(rows))
                        masks = list(out_masks.split(rows)) if out_masks is not None else masks
                        defer = DeferredLayer(self.net.layers[0], self.optimizer.param_groups[0]["lr"], block_x, compact,
                                              compact_t)
                    for idx, xi, mi in zip(group, inputs, masks):
                        lab = labels[idx] if labels is not None else None
                        kw = {"defer": defer, "out_mask": mi} if defer is not None else {}
                        out = self.credit.step(self.net, xi, self.objective, self.state, self.optimizer, lab,
                                               self.generator, **kw)
                        loss = float(out["loss"])
                        if not math.isfinite(loss):
                            raise DivergenceError(
                                f"training diverged at epoch {self.epoch + 1} (loss {loss}); "
                                + (f"the last good checkpoint (epoch {self.epoch}) is kept in {self.out_dir}" if self.out_dir else "no checkpoint folder")
                            )
                        total += loss * len(idx)
                        n += len(idx)
                    if defer is not None:
                        defer.flush()
                if compact is not None:  # the epoch's updates of the active columns, written back once
                    with torch.no_grad():
                        self.net.layers[0].weight[:, cols[:n_dense]] = compact
                        if compact_t is not None:
                            self.net.layers[0].weight[:, cols[n_dense:]] = compact_t.T
                self.train_seconds += time.perf_counter() - t0
                if not all(torch.isfinite(p).all() for p in self.net.parameters()):
                    raise DivergenceError(f"weights stopped being finite at epoch {self.epoch + 1}; last good checkpoint kept")
                self.samples_seen += n
                self.epoch += 1
                self.history.append({"epoch": self.epoch, "loss": total / max(n, 1)})
                self.save_checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
        finally:
            bar.close()
        return self.history

    def _set_lr(self, epoch: int) -> None:
        f = lr_factor(epoch, self.training)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    @property
    def deferrable(self) -> bool:
        """Blocks of deferred updates apply: one layer, plain SGD (see ``DeferredLayer``)."""
        return self.net.n_layers == 1 and _plain_sgd(self.optimizer)

    @property
    def seconds_per_1000(self) -> float:
        """Training seconds per 1,000 samples so far."""
        return 1000 * self.train_seconds / max(self.samples_seen, 1)
