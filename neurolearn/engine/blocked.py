"""Fast executor: one dense layer trained by plain SGD, several batches per weight write.

Supported setups (:meth:`BlockedDenseExecutor.unsupported` says why another is not): a network of one
dense layer, plain SGD, ``[training] block > 1``, an objective that is the mean squared error to a
target it decides (:class:`~neurolearn.objectives.base.TargetObjective`, shown the batch unchanged),
and either :class:`~neurolearn.credit.Backprop` with the delta rule or
:class:`~neurolearn.credit.EquilibriumProp` with the exact single-layer relaxation and the
contrastive Hebbian rule. For those, every batch's update has the batch's input as its pre factor,
``g_t = e_t^T x_t``, so ``M = block`` batches can share one input GEMM and one weight write while each
still sees the exact weights left by the ones before (:class:`DeferredLayer`): what
:mod:`neurolearn.engine.reference` computes batch by batch, in another order of float additions
(tested equal, with dropout on: every batch draws its masks and its sign of beta from its own
generator, in the reference's order).

Three more exact rearrangements of the same sums:
- input columns that are zero in every training sample (MNIST's border: 111 of 784 pixels) contribute
  nothing to any current and receive no update, so the blocks work on a compact copy of the other
  columns of ``W`` (padded to a multiple of 16), written back at the end of every epoch;
- columns active in fewer than :data:`RARE_FREQUENCY` of the samples are kept apart, transposed, and
  enter the block products as sparse matrices (CPU only, where it was measured);
- a block's weight write goes through a sparse ``E^T`` when fewer than :data:`SPARSE_WRITE_DENSITY`
  of its post factors are non-zero (a clamped output cell has zero error).
The weights are current when an epoch ends (the only point where the trainer shows them).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..credit.backprop import Backprop
from ..credit.equilibrium import EquilibriumProp
from ..data import batch_indices
from ..networks import bidirectional as bd
from ..networks.activations import activation, times_derivative
from ..networks.feedforward import FeedForward, keep_mask
from ..networks.layers import Factors
from ..objectives.base import Objective, TargetObjective
from ..plasticity.base import plain_sgd
from ..plasticity.contrastive_hebbian import ContrastiveHebbian
from ..plasticity.delta import Delta
from ..rng import batch_generator
from . import Executor, NonFiniteLoss, register_executor

#: below this fraction of nonzero post factors a block's weight write goes through a sparse matrix
#: (set below the break-even measured on the CPU, docs/design.md; see ``DeferredLayer.flush``)
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
#: one-layer blocks (the MNIST counts are in docs/design.md)
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
    :class:`BlockedDenseExecutor`), with ``block_inputs`` restricted to the same columns.
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

    def add(self, update: Factors, scale: float = 1.0) -> None:
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


@register_executor
class BlockedDenseExecutor(Executor):
    """Blocks of ``[training] block`` batches of a one-layer network (see module docstring)."""

    name = "blocked"

    @classmethod
    def unsupported(cls, trainer) -> str | None:
        net, credit, objective = trainer.net, trainer.credit, trainer.objective
        if trainer.config.block <= 1:
            return "[training] block is 1"
        if not isinstance(net, FeedForward) or net.n_layers != 1 or not isinstance(net.layers[0], nn.Linear):
            return "the network is not one dense layer"
        if not plain_sgd(trainer.optimizer):
            return "the optimizer is not plain SGD"
        if not isinstance(objective, TargetObjective) or type(objective).error is not TargetObjective.error \
                or type(objective).present is not Objective.present:
            return f"{type(objective).__name__} is not the mean squared error to a target shown the batch unchanged"
        if type(credit) is Backprop and type(credit.rule) is Delta:
            return None
        if type(credit) is EquilibriumProp and type(credit.rule) is ContrastiveHebbian and credit.exact_single_layer:
            return None
        return f"{type(credit).__name__} is not Backprop with the delta rule or EquilibriumProp with the exact single-layer relaxation"

    def prepare(self, x, labels) -> None:
        # the columns of input cells active somewhere in x (the blocks work on those only)
        self.cols = active_columns(x)
        self.n_dense = None if self.cols is None else (  # frequent columns first; sparse products on the CPU only
            split_columns(x, self.cols) if x.device.type == "cpu" else len(self.cols))
        self.x_active = x[:, self.cols].contiguous() if self.cols is not None else x

    def _draws(self, epoch: int, b: int, rows: int, n_in: int):
        """The batch's random draws in the reference's order: input mask, output mask, sign of beta."""
        t = self.trainer
        net, g = t.net, batch_generator(t.seed, epoch, b)
        p_in = net.dropout[0]
        m_in = keep_mask((rows, n_in), 1 - p_in, g, t.device) if p_in > 0 else None
        m_out = net.output_mask(rows, g, t.device)
        flip = False
        if isinstance(t.credit, EquilibriumProp) and t.credit.beta_sign == "random":
            flip = bool(torch.randint(0, 2, (1,), generator=g).item())
        return m_in, m_out, flip

    def run_epoch(self, epoch, x, labels, progress):
        t = self.trainer
        net, layer, block = t.net, t.net.layers[0], t.config.block
        cols, n_dense = self.cols, self.n_dense
        compact = compact_t = None
        if cols is not None:  # a compact copy of the active columns' weights
            W = layer.weight.detach()
            compact = W[:, cols[:n_dense]].contiguous()
            if n_dense < len(cols):  # the rare columns' weights, transposed for the sparse products
                compact_t = W[:, cols[n_dense:]].T.contiguous()
        p_in = net.dropout[0]
        # inverted dropout 1/(1-p), or the unscaled mask of EquilibriumProp(input_dropout="unscaled")
        scale_in = t.credit.input_scale(p_in) if isinstance(t.credit, EquilibriumProp) else 1.0 / (1 - p_in)
        batches = batch_indices(x.shape[0], t.config.batch_size, t.seed, epoch)
        total, n = 0.0, 0
        for start in range(0, len(batches), block):
            group = batches[start: start + block]
            draws = [self._draws(epoch, start + i, len(idx), x.shape[1]) for i, idx in enumerate(group)]
            parts = []
            for idx, (m_in, _, _) in zip(group, draws):
                xi = self.x_active[idx]
                if m_in is not None:
                    xi = xi * (m_in if cols is None else m_in[:, cols])
                    if scale_in != 1.0:
                        xi = xi * scale_in
                parts.append(xi)
            block_x = torch.cat(parts)
            defer = DeferredLayer(layer, t.optimizer.param_groups[0]["lr"], block_x, compact, compact_t)
            for k, (idx, xi, (_, m_out, flip)) in enumerate(zip(group, block_x.split([len(i) for i in group]), draws)):
                lab = None if labels is None else labels[idx]
                loss = self._batch(defer, xi, m_out, flip, lab)
                if not math.isfinite(loss):
                    raise NonFiniteLoss(start + k, loss)
                total += loss * len(idx)
                n += len(idx)
            defer.flush()
            progress(len(group))
        if compact is not None:  # the epoch's updates of the active columns, written back once
            with torch.no_grad():
                layer.weight[:, cols[:n_dense]] = compact
                if compact_t is not None:
                    layer.weight[:, cols[n_dense:]] = compact_t.T
        return total, n

    def _batch(self, defer: DeferredLayer, xi, mask, flip: bool, labels) -> float:
        """One batch of the block: what ``credit.step`` does, with the current from ``defer``."""
        t = self.trainer
        credit, objective, net = t.credit, t.objective, t.net
        u = defer.drive(xi)
        if isinstance(credit, Backprop):
            h = activation(net.activation_of(0), u)
            y = h if mask is None else h * mask
            d = objective.decide(y, t.state, mask, labels)
            diff = y - d  # zero where the output is dropped (y and d are both masked)
            flat = diff.view(-1)
            numel = flat.numel()
            loss = torch.dot(flat, flat).item() / numel
            e = times_derivative(net.activation_of(0), diff, u)
            defer.add(Factors(e, xi), 2.0 / numel)  # dL/du = 2/(B n) (y - d) f'(u)
            return loss
        stats = t.credit_state.setdefault("solver", {})
        free = bd.relax(net, xi, None, credit.free_steps, 0.0, None, None, u, credit.how("free"), stats)
        y = free[-1] if mask is None else free[-1] * mask
        d = objective.decide(y, t.state, mask, labels)
        diff = y - d
        loss = float((diff * diff).sum()) / diff.numel()
        beta = -credit.beta if flip else credit.beta
        nudged = bd.relax(net, xi, free, credit.nudged_steps, beta, d, mask, u, credit.how("nudged"), stats)
        if credit.beta_sign == "symmetric":
            other = bd.relax(net, xi, free, credit.nudged_steps, -beta, d, mask, u, credit.how("nudged"), stats)
            a, b, scale = nudged[0], other[0], 1.0 / (2 * beta * xi.shape[0])
        else:
            a, b, scale = nudged[0], free[0], 1.0 / (beta * xi.shape[0])
        if mask is not None:  # a dropped output cell does not learn (equilibrium.mask_output)
            a, b = a * mask, b * mask
        f = credit.rule.factors(xi, a, xi, b, scale)
        defer.add(f)
        return loss
