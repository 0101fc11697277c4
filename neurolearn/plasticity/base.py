"""What every plasticity rule shares: a low-rank weight gradient and how an optimiser applies it.

Every rule in neurolearn produces, for a layer with weights ``W`` of shape ``(n_post, n_pre)``, a
gradient that is a sum of outer products over samples (and phases),

    g = sum_r  a_r  b_r^T  =  A^T B,        A: (R, n_post),  B: (R, n_pre),

so the rule returns the two factors (:class:`LowRankUpdate`) instead of the dense matrix. Applying
it with plain SGD is then one fused matrix product ``W <- W - lr A^T B`` (``torch.addmm_``): no dense
gradient is written and read back, which is what makes the one-layer rules memory-bound no more.
With any other torch optimiser (Adam ...) the dense gradient is written to ``W.grad`` and the
optimiser steps as usual. The sign convention is that of ``.grad``: the weight change is ``-lr * g``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

#: below this fraction of nonzero post factors a block's weight write goes through a sparse matrix
#: (measured break-even on 2 cores: about 8%; see ``DeferredLayer.flush``)
SPARSE_WRITE_DENSITY = 0.06


def rows_as_csr(A: torch.Tensor) -> torch.Tensor:
    """``A^T`` as a sparse CSR matrix: row ``i`` holds the nonzero ``A[r, i]`` with their ``r``.

    Used by :class:`DeferredLayer`: ``W <- W - lr A^T B`` then costs ``nnz(A) * n_pre`` multiply-adds
    instead of ``R * n_post * n_pre`` when most of the post factors are zero (a clamped output cell
    has no error), and reads ``W`` once; likewise for the rarely active input columns.
    """
    At = A.T.contiguous()
    r = A.shape[0]
    flat = At.view(-1)
    idx = flat.nonzero().squeeze(1)
    rows = torch.div(idx, r, rounding_mode="floor")
    crow = torch.zeros(At.shape[0] + 1, dtype=torch.int64, device=A.device)
    torch.cumsum(torch.bincount(rows, minlength=At.shape[0]), 0, out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, idx - rows * r, flat[idx], size=At.shape)


@dataclass
class LowRankUpdate:
    """Gradient ``g_W = post^T @ pre`` and ``g_b = post^T 1`` for one layer.

    ``post``: ``(R, n_post)``, ``pre``: ``(R, n_pre)``. A bias is a synapse from a constant input 1,
    so its gradient is always the column sum of ``post`` (computed only when asked for).
    """

    post: torch.Tensor
    pre: torch.Tensor

    @property
    def bias(self) -> torch.Tensor:
        """``g_b = sum_r post_r``."""
        return self.post.sum(0)

    def dense(self) -> torch.Tensor:
        """The dense gradient ``post^T @ pre`` of shape ``(n_post, n_pre)``."""
        return self.post.T @ self.pre


def _plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    if type(optimizer) is not torch.optim.SGD:
        return False
    g = optimizer.param_groups
    return all(p.get("momentum", 0) == 0 and p.get("weight_decay", 0) == 0 and not p.get("maximize", False) for p in g)


def apply_updates(
    optimizer: torch.optim.Optimizer, layers: list[nn.Linear], updates: list[LowRankUpdate | None]
) -> None:
    """Apply one update per layer: fused ``W.addmm_(-lr A^T B)`` for plain SGD, else via ``.grad``.

    ``updates[l]`` belongs to ``layers[l]`` (``None`` leaves the layer unchanged). The learning rate
    of each weight is read from the optimiser's parameter groups, so LR schedulers act as usual.
    """
    if _plain_sgd(optimizer):
        lr_of = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                lr_of[id(p)] = group["lr"]
        with torch.no_grad():
            for layer, upd in zip(layers, updates):
                if upd is None:
                    continue
                if id(layer.weight) not in lr_of:
                    raise ValueError("apply_updates: a layer's weight is not among the optimizer's parameters")
                layer.weight.addmm_(upd.post.T, upd.pre, alpha=-lr_of[id(layer.weight)])
                if layer.bias is not None:
                    layer.bias.add_(upd.bias, alpha=-lr_of[id(layer.bias)])
        return
    optimizer.zero_grad(set_to_none=False)
    for layer, upd in zip(layers, updates):
        if upd is None:
            continue
        layer.weight.grad = upd.dense()
        if layer.bias is not None:
            layer.bias.grad = upd.bias
    optimizer.step()


class DeferredLayer:
    """A block of plain-SGD updates of one layer applied at once, each batch still seeing exact weights.

    For a layer driven by the block's inputs ``x_1 .. x_M`` (batches of rows), with updates whose
    pre factor is that batch's input (``g_t = e_t^T x_t``, bias ``e_t^T 1``: the delta rule, and the
    contrastive Hebbian rule of a layer whose input is clamped), the weights seen by batch ``t`` are
    ``W_t = W_0 - lr sum_{s<t} e_s^T x_s``, so its input current is exactly

        u_t = x_t W_0^T + b_0 - lr (x_t X_{<t}^T + 1) E_{<t}

    where ``X_{<t}``, ``E_{<t}`` stack the earlier batches' factors. ``x W_0^T`` is one matrix product
    for the whole block and the weights are written once per block (``W <- W_0 - lr E^T X``): two large
    efficient GEMMs instead of 2M small ones, the same arithmetic up to float rounding.

    ``weight`` (default: the layer's own) is the matrix read and updated: the trainer passes a compact
    copy ``W[:, J]`` of the columns of input cells that are ever active (see
    :class:`~neurolearn.train.Trainer`), with ``block_inputs`` restricted to the same columns.
    With ``sparse_weight_t`` the last ``S`` block input columns are rarely active ones whose weights
    are given transposed, ``W_s^T`` ``(S, n_out)``: their share of ``u`` and of the update goes through
    sparse products (``x_s W_s^T`` and ``X_s^T E``: a few hundred nonzeros per block on MNIST), the
    dense GEMMs run on the frequently active columns only. Same sums, another order of additions.
    """

    def __init__(self, layer: nn.Linear, lr: float, block_inputs: torch.Tensor, weight: torch.Tensor | None = None,
                 sparse_weight_t: torch.Tensor | None = None):
        self.layer, self.lr = layer, lr
        W = layer.weight.detach() if weight is None else weight
        n_dense = W.shape[1]
        n_sparse = 0 if sparse_weight_t is None else sparse_weight_t.shape[0]
        if W.shape[0] != layer.out_features or n_dense + n_sparse != block_inputs.shape[1] or (
                n_sparse and sparse_weight_t.shape[1] != layer.out_features):
            shapes = f"weight {tuple(W.shape)}" + (f", sparse_weight_t {tuple(sparse_weight_t.shape)}" if n_sparse else "")
            raise ValueError(f"DeferredLayer: {shapes} do not match {layer.out_features} outputs and "
                             f"{block_inputs.shape[1]} block input columns")
        self.W, self.Ws_t = W, sparse_weight_t
        self.X = block_inputs
        self.Xd = block_inputs[:, :n_dense] if n_sparse else block_inputs
        self.Xs = block_inputs[:, n_dense:] if n_sparse else None
        if layer.bias is not None:  # W X^T computed as (n_out, rows): the faster GEMM layout here
            self.U0 = torch.addmm(layer.bias.detach()[:, None], W, self.Xd.T).T.contiguous()
        else:
            self.U0 = torch.mm(W, self.Xd.T).T.contiguous()
        if n_sparse:  # the rarely active columns: a sparse input matrix times their weights
            self.U0.addmm_(rows_as_csr(self.Xs.T), sparse_weight_t)
        self.rows = 0  # rows handed out by drive()
        self.done = 0  # rows whose update is recorded
        # coefficients of the current correction for every pair of rows: x_t . x_s (+ 1 for the bias)
        self.G = block_inputs @ block_inputs.T
        if layer.bias is not None:
            self.G += 1.0
        self.E = torch.empty(block_inputs.shape[0], layer.out_features, dtype=self.U0.dtype, device=self.U0.device)

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """The exact input current ``u_t`` of the next batch ``x`` (the block's next rows)."""
        r0, r1 = self.rows, self.rows + x.shape[0]
        u = self.U0[r0:r1]
        self.rows = r1
        if self.done:
            u = torch.addmm(u, self.G[r0:r1, : self.done], self.E[: self.done], alpha=-self.lr)
        return u

    def add(self, update: LowRankUpdate, scale: float = 1.0) -> None:
        """Record a batch's update, its ``post`` factor times ``scale`` (its ``pre`` factor must be the
        batch's rows of the block input, i.e. the rows last given a drive)."""
        n = update.post.shape[0]
        if n != self.rows - self.done:
            raise ValueError("DeferredLayer.add: the update must belong to the batch last given a drive")
        torch.mul(update.post, scale, out=self.E[self.done : self.done + n])
        self.done += n

    def flush(self) -> None:
        """Write the block's updates into the layer: ``W <- W_0 - lr E^T X``, one matrix product.

        When fewer than ``SPARSE_WRITE_DENSITY`` of the post factors ``E`` are nonzero (a sample's
        error is zero at every clamped output cell: after the first epoch about 3% remain), ``E^T``
        goes in as a sparse matrix (:func:`rows_as_csr`); otherwise a dense GEMM. Same sums, another
        order of float additions.
        """
        if not self.done:
            return
        with torch.no_grad():
            E = self.E[: self.done]
            X = self.Xd[: self.done]
            if self.Ws_t is not None:  # W_s^T <- W_s^T - lr X_s^T E: the rare inputs' few nonzeros
                self.Ws_t.addmm_(rows_as_csr(self.Xs[: self.done]), E, alpha=-self.lr)
            probe = E[::8]  # a cheap estimate of the density
            if (self.W.device.type == "cpu"
                    and torch.count_nonzero(probe).item() < SPARSE_WRITE_DENSITY * probe.numel()):
                self.W.addmm_(rows_as_csr(E), X, alpha=-self.lr)
            else:
                self.W.addmm_(E.T, X, alpha=-self.lr)
            if self.layer.bias is not None:
                self.layer.bias.add_(E.sum(0), alpha=-self.lr)
        self.done = self.rows = 0
