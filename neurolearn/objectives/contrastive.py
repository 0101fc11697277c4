"""Objectives over pairs of views: Tang, Yang & Amit 2022's contrastive hinge and the SimCLR / CLAPP baselines.

A pair objective shows the network two independent views of every image of a batch ``x`` (B images):

    present(x) = cat([view(x), view(x)])        2B rows: rows s (view A of image s) and B + s (view B)

and reads the output back as ``z^A = y[:B]``, ``z^B = y[B:]``. The views are a registered view generator
(:mod:`neurolearn.data.views`, ``view = "tang_affine"`` by default, with ``affine_fraction``, ``hflip`` and
``padding``).

Contrastive hinge (Tang et al. 2022, eq. 2; METHODS.md section 3.1), with ``d(s, t) = ||z^A_s - z^B_t||_1``:

    L = sum_s ( [d(s, s) - m1]_+  +  sum_{t in N_s} w_neg [m2 - d(s, t)]_+ )

``N_s`` all ``t != s`` with ``w_neg = 1`` (``negatives = 0``: "all"), or the next ``K - 1`` images in batch
order, ``t = s+1 .. s+K-1`` without wrap-around, with ``w_neg = 1/K`` (the authors' code) or 1 (the paper's
eq. 2) (``negatives = K``; ambiguity A1). Its gradient is the closed-form per-cell error of eqs. 4-6
(:func:`hinge_errors`); with the gradient block (eq. 7) the anchor ``z^A`` is a constant.

SimCLR (Chen et al. 2020; Tang et al. eq. 1, METHODS.md 3.4) and CLAPP with deformations (Illing et al.
2021; METHODS.md 3.5, ambiguity A11) are the non-local baselines. The locality checks of the top-layer
updates (METHODS.md section 8) are registered with ``neurolearn check-locality`` at the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._validate import ParameterError
from ..describe import lookup, param, register
from ..locality.catalog import register_check
from ..locality.contract import Cells, Checkable, Contract, Layer, SampleScalar, Signal, StateSpec, Trace
from .base import Objective, OutputError

#: the neighbour weightings of the "K negatives" hinge: the code's 1/K or the paper's 1 (ambiguity A1)
WEIGHTINGS = ("code", "paper")
#: the pathway through which the hinge error circuit delivers each top cell's error (METHODS.md 3.3)
HINGE_PATHWAY = "hinge error"


# ----------------------------------------------------------------------------- the closed-form hinge
def _negatives_k(negatives) -> int:
    """``negatives`` as an int: 0 for "all", K >= 2 for the next K - 1 neighbours."""
    if negatives == "all":
        return 0
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0 or negatives == 1:
        raise ParameterError(f"hinge_errors: negatives must be 'all' (or 0) or an integer K >= 2 (the next K - 1 "
                             f"images in batch order), got {negatives!r}")
    return int(negatives)


def _check_hinge_inputs(owner: str, zA, zB, negatives, weighting: str) -> int:
    """``K`` (:func:`_negatives_k`) after checking that ``zA``, ``zB`` are tensors of one shape ``(n, d)`` and
    ``weighting`` is one of :data:`WEIGHTINGS` (errors name ``owner``)."""
    if not (torch.is_tensor(zA) and torch.is_tensor(zB)) or zA.ndim != 2 or zA.shape != zB.shape:
        raise ParameterError(f"{owner}: zA and zB must be tensors of the same shape (n, d), got "
                             f"{tuple(getattr(zA, 'shape', ()))} and {tuple(getattr(zB, 'shape', ()))}")
    K = _negatives_k(negatives)
    if weighting not in WEIGHTINGS:
        raise ParameterError(f"{owner}: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return K


def l1_sign_sums(zA: torch.Tensor, zB: torch.Tensor, C, need_a: bool = True) -> tuple:
    """``(sum_t C_st sgn(zA_s - zB_t), sum_s C_st sgn(zA_s - zB_t), d)`` for ``zA (n, d)``, ``zB (m, d)``, with
    ``d(s, t) = ||zA_s - zB_t||_1`` and ``sgn(0) = 0``: the sums of signs through which every pair's gate reaches
    a cell (Tang et al. 2022, eqs. 4-6). ``C`` is an ``(n, m)`` tensor or a function of the distances ``d``
    returning one (a gate). Computed as the vector-Jacobian product of ``torch.cdist(zA, zB, p=1)`` with ``C``,
    whose fused kernel never holds the ``(n, m, d)`` signs in memory. ``need_a=False``: the first sum is
    ``None`` (not computed)."""
    with torch.enable_grad():
        a = zA.detach().requires_grad_(need_a)
        b = zB.detach().requires_grad_(True)
        dist = torch.cdist(a, b, p=1)
        c = C(dist.detach()) if callable(C) else C
        grads = torch.autograd.grad(dist, (a, b) if need_a else (b,), c)
    return (grads[0] if need_a else None), -grads[-1], dist.detach()


def hinge_errors(zA: torch.Tensor, zB: torch.Tensor, m1: float = 1.0, m2: float = 1.5, negatives="all",
                 weighting: str = "code", grad_block: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive hinge loss and its closed-form per-cell errors (Tang et al. 2022, eqs. 2 and 4-7).

    ``zA``, ``zB``: ``(n, d)`` top-layer outputs for views A and B of ``n`` images; ``d(s, t) = ||zA_s - zB_t||_1``;

        L     = sum_s ( [d(s,s) - m1]_+ + sum_{t in N_s} w [m2 - d(s,t)]_+ )
        P_s   = 1[d(s,s) > m1],   G_st = w 1[d(s,t) < m2]                       (the circuit's gates)
        gA_s  = P_s sgn(zA_s - zB_s) - sum_{t in N_s} G_st sgn(zA_s - zB_t)     (= dL/dzA_s, eq. 4; 0 with grad_block)
        gB_t  = -P_t sgn(zA_t - zB_t) + sum_{s: t in N_s} G_st sgn(zA_s - zB_t) (= dL/dzB_t, eqs. 5-6)

    ``negatives``: ``"all"`` (or 0; ``N_s = {t != s}``, ``w = 1``) or ``K >= 2`` (``N_s = {s+1, ..., s+K-1}``
    within the batch, ``w = 1/K`` for ``weighting="code"``, 1 for ``"paper"``). ``grad_block``: ``gA = 0``
    (eq. 7: the anchor is a constant). ``sgn(0) = 0`` and the gates are strict, as autograd of ``|.|`` and
    ``[.]_+`` at 0. Returns ``(loss (0-d), gA, gB)``.
    """
    K = _check_hinge_inputs("hinge_errors", zA, zB, negatives, weighting)
    n, d = zA.shape
    zA, zB = zA.detach(), zB.detach()
    diff = zA - zB
    sg = torch.sign(diff)
    dpos = diff.abs().sum(1)
    pos = (dpos > m1).to(zA.dtype)
    loss = torch.relu(dpos - m1).sum()
    gA = pos[:, None] * sg
    gB = -pos[:, None] * sg
    if K:
        w = 1.0 / K if weighting == "code" else 1.0
        for k in range(1, min(K, n)):
            dk = zA[: n - k] - zB[k:]  # anchor s, negative t = s + k
            dist = dk.abs().sum(1)
            loss = loss + w * torch.relu(m2 - dist).sum()
            gate = w * (dist < m2).to(zA.dtype)
            term = gate[:, None] * torch.sign(dk)
            gA[: n - k] -= term
            gB[k:] += term
    else:
        other = ~torch.eye(n, dtype=torch.bool, device=zA.device)
        sA, sB, dist = l1_sign_sums(zA, zB, lambda dist: ((dist < m2) & other).to(zA.dtype), need_a=not grad_block)
        loss = loss + (torch.relu(m2 - dist) * other).sum()
        if sA is not None:
            gA -= sA
        gB += sB
    if grad_block:
        gA = torch.zeros_like(gA)
    return loss, gA, gB


# ----------------------------------------------------------------------------- pair objectives
@dataclass(frozen=True)
class PairObjective(Objective):
    """Base of objectives over two views of every image (module docstring).

    Keys: ``view`` (a registered view name, default "tang_affine"), ``affine_fraction`` (fraction of each batch
    the view warps), ``hflip`` (flip probability), ``padding`` ("zeros" | "border"); a key the chosen view does
    not take is ignored by it (the identity view "none" takes none).
    """

    view: str = param("tang_affine", help="registered view generator making the two views (kind 'view')")
    affine_fraction: float = param(0.5, low=0.0, high=1.0, help="fraction of each batch the view warps (Tang code: 0.5)")
    hflip: float = param(0.5, low=0.0, high=1.0, help="horizontal flip probability per image")
    padding: str = param("zeros", choices=("zeros", "border"), help="fill outside the image: zeros or border")

    def validate(self) -> None:
        """The view must be a registered view name."""
        try:
            lookup("view", self.view)
        except ParameterError as e:
            raise ParameterError(f"{type(self).__name__}: view {e}") from None

    def make_view(self):
        """The view generator: the registered ``view`` with those of ``fraction`` / ``hflip`` / ``padding`` it takes."""
        cls = lookup("view", self.view)
        keys = {"fraction": self.affine_fraction, "hflip": self.hflip, "padding": self.padding}
        return cls(**{k: v for k, v in keys.items() if k in cls.params()})

    def present(self, x: torch.Tensor, labels, generator: torch.Generator | None = None):
        """``(cat([view(x), view(x)]), cat([labels, labels]))``: two independent views of each image (2B rows)."""
        view = self.make_view()
        a = view(x, generator)
        b = view(x, generator)
        return torch.cat([a, b]), (None if labels is None else torch.cat([labels, labels]))

    @staticmethod
    def split(y: torch.Tensor, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z^A, z^B) = (y[:B], y[B:])`` of the ``2B`` rows :meth:`present` made."""
        if y.ndim != 2 or y.shape[0] % 2:
            raise ParameterError(f"{owner}: the output must hold 2B rows (views A then views B of B images, as "
                                 f"present() makes them), got shape {tuple(y.shape)}")
        n = y.shape[0] // 2
        return y[:n], y[n:]


#: where ContrastiveHinge takes its per-cell error from: eqs. 4-6 in closed form or the rate circuit of Appendix A
ERROR_SOURCES = ("closed_form", "circuit")
#: the keys that only apply with ``error_source = "circuit"`` and their intact values (circuits/hinge_error.toml,
#: HingeError and ShortTermMemory defaults)
CIRCUIT_KEYS = {"graded": False, "inhibition_gain": 1.0, "memory_recurrence": 1.0, "memory_retention": 0.5}
#: at most this many (presentation x top cell) values are run through the circuit at once
_CIRCUIT_CHUNK = 1 << 18


def circuit_hinge_errors(zA: torch.Tensor, zB: torch.Tensor, circuit, memory, negatives="all", weighting: str = "code",
                         grad_block: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive hinge loss and per-cell errors as the circuits deliver them (Tang et al. 2022, Section 3.1,
    eqs. 4-7 and Appendix A): the batch's presentation sequences run side by side.

    Every anchor ``s`` is written into the short-term memory ``memory`` (a
    :class:`~neurolearn.circuits.memory.ShortTermMemory`), ``M_s = z^A_s``; presentation ``j = 1, 2, ...`` of its
    sequence reads the memory after ``j`` presentations, ``M_s(j) = M_s exp(-(1 - w) j / tau)`` (exactly ``z^A_s``
    for the intact, persistent memory ``w = 1``), and the hinge circuit ``circuit`` (a
    :class:`~neurolearn.circuits.hinge_error.HingeError`) compares it with the presented view:

        j = 1:       t = s (the positive),  delta = -G+ sign(M_s(1), z^B_s)                          (eq. 5)
        j = 2 .. :   t = the negatives in the sequence order of the sequential mode, s+1 .. s+K-1 (``negatives = K``,
                     no wrap-around) or s+1, .., B-1, 0, .., s-1 ("all"),  delta = w_neg G- sign(M_s(j), z^B_t) (eq. 6)
        gB_t = sum of the deltas of the presentations of view t,     gA_s = -sum of the deltas of s's sequence (eq. 4;
        0 with ``grad_block``, eq. 7),     L = sum of the presentations' hinge terms.

    ``w_neg`` is 1 for "all" and ``1/K`` (``weighting = "code"``) or 1 (``"paper"``) for ``K`` negatives. With the
    intact circuit (``inhibition_gain = 1``, ``graded = False``) and memory this is :func:`hinge_errors` (tested);
    a broken inhibitory copy, a graded sign or a memory that does not hold changes it. The margins are the
    circuit's ``m1``, ``m2``. Returns ``(loss (0-d), gA, gB)``.
    """
    from ..circuits.hinge_error import HingeError
    from ..circuits.memory import ShortTermMemory

    K = _check_hinge_inputs("circuit_hinge_errors", zA, zB, negatives, weighting)
    if not isinstance(circuit, HingeError) or not isinstance(memory, ShortTermMemory):
        raise ParameterError(f"circuit_hinge_errors: circuit must be a HingeError and memory a ShortTermMemory, got "
                             f"{type(circuit).__name__} and {type(memory).__name__}")
    zA, zB = zA.detach(), zB.detach()
    if not bool(torch.isfinite(zA).all() & torch.isfinite(zB).all()):
        raise ParameterError("circuit_hinge_errors: zA and zB must be finite")
    B, n = zA.shape
    w_neg = 1.0 if K == 0 or weighting == "paper" else 1.0 / K
    M0 = memory.read(memory.write(memory.init_state(B, n, dtype=zA.dtype, device=zA.device), zA))
    rows = torch.arange(B, device=zA.device)
    gA, gB = torch.zeros_like(zA), torch.zeros_like(zB)
    loss = zA.new_zeros(())

    def present(positions, phase):
        nonlocal loss
        # presentation j of every sequence that has one: anchor s, view t = s + j - 1 (mod B), memory after j steps
        s_idx = torch.cat([rows if K == 0 else rows[: B - j + 1] for j in positions])
        j_idx = torch.cat([torch.full((B if K == 0 else B - j + 1,), j, device=zA.device) for j in positions])
        t_idx = (s_idx + j_idx - 1) % B
        M = M0[s_idx]
        factors = [memory.decay_factor(j) for j in positions]  # ShortTermMemory.step(state, j) scales M by this
        if any(f != 1.0 for f in factors):
            f = torch.tensor(factors, dtype=zA.dtype, device=zA.device)
            M = M * f[j_idx - positions[0], None]
        sig = circuit.run(M, zB[t_idx], phase, w_neg)  # inputs checked above
        loss = loss + sig.loss.sum()
        gB.index_add_(0, t_idx, sig.delta)
        if not grad_block:
            gA.index_add_(0, s_idx, -sig.delta)

    present(range(1, 2), "positive")
    last = B if K == 0 else min(K, B)
    per_call = max(1, _CIRCUIT_CHUNK // max(1, B * n))
    for start in range(2, last + 1, per_call):
        present(range(start, min(start + per_call, last + 1)), "negative")
    return loss, gA, gB


@register("objective", "contrastive_hinge")
@dataclass(frozen=True)
class ContrastiveHinge(PairObjective):
    """Tang et al. 2022's contrastive hinge on L1 distances (eq. 2) with its per-cell error (eqs. 4-7).

    Keys: ``m1`` (positive margin, 1), ``m2`` (negative margin, 1.5: Table 4's MNIST value; 3 for CIFAR/STL),
    ``negatives`` (0: all other B views, weight 1; K >= 2: the next K - 1 in batch order), ``weighting``
    ("code": 1/K | "paper": 1), ``grad_block`` (the anchor is a constant, eq. 7), plus the view keys.
    ``error`` returns ``L`` (sum over the batch, as the authors' code) and ``dL/dy = cat([gA, gB])``.

    ``error_source = "closed_form"`` (default) takes ``gA``, ``gB`` from :func:`hinge_errors` (eqs. 4-6 in closed form);
    ``error_source = "circuit"`` from the short-term memory and the hinge error circuit of Appendix A run on every
    presentation (:func:`circuit_hinge_errors`), with the circuit's keys ``graded`` and ``inhibition_gain``
    (circuits/hinge_error.toml; a recipe may write ``circuits = ["hinge_error"]``) and the memory's
    ``memory_recurrence`` and ``memory_retention`` (circuits/short_term_memory.toml's ``recurrence`` and
    ``retention``). These four keys apply only with ``error_source = "circuit"``; with ``"closed_form"`` a value other than
    the intact one is a :class:`ParameterError` (it would silently do nothing). The intact circuit gives the closed
    form's errors, so the same training (tested).
    """

    m1: float = param(1.0, low=0.0, help="positive margin: a pair farther than m1 (L1) is pulled together")
    m2: float = param(1.5, low=0.0, help="negative margin: a non-pair closer than m2 (L1) is pushed apart")
    negatives: int = param(0, low=0, help="0: all other B views of the batch (weight 1); K >= 2: the next K-1 images")
    weighting: str = param("code", choices=WEIGHTINGS, help="weight of each of the K-1 negatives: 1/K (code) or 1 (paper)")
    grad_block: bool = param(True, help="treat the anchor z^A as a constant (eq. 7)")
    error_source: str = param("closed_form", choices=ERROR_SOURCES,
                       help="per-cell error from eqs. 4-6 in closed form, or from the memory and hinge error circuit (App. A)")
    graded: bool = param(False, help="error_source = 'circuit' only: sign_i = D+_i - D-_i instead of H(D+_i) - H(D-_i)")
    inhibition_gain: float = param(1.0, low=0.0, help="error_source = 'circuit' only: gain of the circuit's inhibitory copies "
                                                      "(fault injection; 1 = intact)")
    memory_recurrence: float = param(1.0, low=0.0, high=1.0, help="error_source = 'circuit' only: memory recurrence (1 holds "
                                                                  "the anchor; < 1 lets it decay)")
    memory_retention: float = param(0.5, low=0.0, low_open=True, help="error_source = 'circuit' only: memory units' time "
                                                                      "constant, in presentations")

    pathway = HINGE_PATHWAY

    def validate(self) -> None:
        """``negatives`` is 0 or >= 2; the circuit keys keep their intact values unless ``error_source = "circuit"``;
        ``m2`` is checked against nothing (the paper's m2 > m1 is not required)."""
        super().validate()
        if self.negatives == 1:
            raise ParameterError("ContrastiveHinge: negatives must be 0 (all other B views) or an integer K >= 2 "
                                 "(the next K - 1 images in batch order), got 1")
        if self.error_source != "circuit":
            for key, intact in CIRCUIT_KEYS.items():
                if getattr(self, key) != intact:
                    raise ParameterError(f"ContrastiveHinge: {key} applies only with error_source = 'circuit' (the memory and "
                                         f"hinge error circuit); with error_source = {self.error_source!r} it must keep its value "
                                         f"{intact!r}, got {getattr(self, key)!r}: set error_source = 'circuit' or remove {key}")

    def circuits(self):
        """``(HingeError, ShortTermMemory)`` of ``error_source = "circuit"``: this objective's margins and circuit keys."""
        from ..circuits.hinge_error import HingeError
        from ..circuits.memory import ShortTermMemory

        return (HingeError(m1=self.m1, m2=self.m2, graded=self.graded, inhibition_gain=self.inhibition_gain),
                ShortTermMemory(retention=self.memory_retention, recurrence=self.memory_recurrence))

    def circuit_checkables(self) -> list:
        """With ``error_source = "circuit"``: the hinge error circuit's delivery of gate and sign to the top layer
        (:func:`~neurolearn.circuits.hinge_error.hinge_circuit_checkable`); none in closed form."""
        if self.error_source != "circuit":
            return []
        from ..circuits.hinge_error import hinge_circuit_checkable

        return [("hinge error circuit", lambda s: hinge_circuit_checkable(s[0], s[1], "circuit", self.m1), 2)]

    def error_terms(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L, gA, gB)`` for the ``2B`` rows ``y``: :func:`hinge_errors` or :func:`circuit_hinge_errors` (``error_source``)."""
        zA, zB = self.split(y, "ContrastiveHinge")
        negatives = self.negatives or "all"
        if self.error_source == "circuit":
            circuit, memory = self.circuits()
            return circuit_hinge_errors(zA, zB, circuit, memory, negatives, self.weighting, self.grad_block)
        return hinge_errors(zA, zB, self.m1, self.m2, negatives, self.weighting, self.grad_block)

    def error(self, y: torch.Tensor, state=None, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``L`` of eq. 2 and ``dL/dy = cat([gA, gB])`` (:meth:`error_terms`)."""
        loss, gA, gB = self.error_terms(y)
        return OutputError(loss=loss, grad=torch.cat([gA, gB]))


def simclr_loss(zA: torch.Tensor, zB: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020; Tang et al. 2022, eq. 1) with ``sim(a, b) = a.b / (|a| |b|)``:

        l(a_s) = -log[ exp(sim(a_s, b_s)/tau) / (sum_{t != s} exp(sim(a_s, a_t)/tau) + sum_t exp(sim(a_s, b_t)/tau)) ]
        L = mean_s l(A_s) + mean_s l(B_s)      (both directions, negatives from both lists, the two summed)
    """
    n = zA.shape[0]
    z = F.normalize(torch.cat([zA, zB]), dim=1)
    logits = z @ z.T / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    ce = F.cross_entropy(logits, target, reduction="none")
    return ce[:n].mean() + ce[n:].mean()


def simclr_errors(zA: torch.Tensor, zB: torch.Tensor, tau: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`simclr_loss` and its gradient in closed form: with ``u_k = z_k / |z_k|`` (rows of ``cat([zA, zB])``),
    ``P`` the softmax of ``u_k . u_l / tau`` over ``l != k``, ``Y`` the one-hot positive and ``G = (P - Y) / n``:

        dL/du = (G + G^T) u / tau,      dL/dz_k = (dL/du_k - u_k (u_k . dL/du_k)) / |z_k|

    (``|z_k|`` floored at 1e-12 as ``F.normalize``; below it ``dL/dz_k = dL/du_k / 1e-12``). Returns ``(L, gA, gB)``.
    """
    n = zA.shape[0]
    z = torch.cat([zA, zB]).detach()
    norm = z.norm(dim=1, keepdim=True)
    u = z / norm.clamp_min(1e-12)
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (u @ u.T / tau).masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    logp = torch.log_softmax(logits, 1)
    loss = -logp[torch.arange(2 * n, device=z.device), target].sum() / n
    G = (logp.exp() - torch.nn.functional.one_hot(target, 2 * n).to(z.dtype)) / n
    du = (G + G.T) @ u / tau
    dz = torch.where(norm > 1e-12, (du - u * (u * du).sum(1, keepdim=True)) / norm.clamp_min(1e-12), du / 1e-12)
    return loss, dz[:n], dz[n:]


@register("objective", "simclr")
@dataclass(frozen=True)
class SimCLR(PairObjective):
    """SimCLR (NT-Xent, :func:`simclr_loss`) on two views: the non-local baseline of Tang et al. 2022 (eq. 1).

    Key ``tau`` (0.1, the paper and the biological-SSL code; 0.5 in the SSL-DTP code, ambiguity A12) plus the
    view keys. ``dL/dy`` by autograd: unit normalisation over the layer and a softmax over the batch.
    """

    tau: float = param(0.1, low=0.0, low_open=True, help="temperature of the softmax over the batch")

    def error(self, y: torch.Tensor, state=None, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``L`` of :func:`simclr_loss` and its autograd gradient ``dL/dy``."""
        self.split(y, "SimCLR")
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            zA, zB = self.split(yy, "SimCLR")
            loss = simclr_loss(zA, zB, self.tau)
            (grad,) = torch.autograd.grad(loss, yy)
        return OutputError(loss=loss.detach(), grad=grad)


class Predictor(torch.nn.Module):
    """CLAPP's prediction matrix ``W_pred`` (``n x n``), a buffer (the trainer checkpoints it, no optimiser sees it)."""

    def __init__(self, n: int, init: str = "identity", seed: int = 0):
        super().__init__()
        if init == "identity":
            w = torch.eye(n)
        else:  # PyTorch's default for a bias-free 1x1 conv / linear: U(-1/sqrt(n), 1/sqrt(n))
            g = torch.Generator().manual_seed(seed)
            w = (torch.rand((n, n), generator=g) * 2 - 1) / n ** 0.5
        self.register_buffer("W", w)


def clapp_loss(zA: torch.Tensor, zB: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """CLAPP's hinge on a bilinear score (Illing et al. 2021; deformation version, METHODS.md 3.5, A11):
    ``score(z, c) = z^T W c``, context ``c = z^A_s``, positive ``z^B_s``, negatives ``z^B_t`` (``t != s``):

        L = mean_s [1 - score(z^B_s, z^A_s)]_+ + mean_{s, t != s} [1 + score(z^B_t, z^A_s)]_+
    """
    n = zA.shape[0]
    scores = zB @ W @ zA.T  # scores[t, s] = zB_t^T W zA_s
    pos = torch.relu(1 - scores.diagonal()).mean()
    if n < 2:
        return pos
    off = ~torch.eye(n, dtype=torch.bool, device=zA.device)
    return pos + torch.relu(1 + scores[off]).mean()


@register("objective", "clapp")
@dataclass(frozen=True)
class CLAPP(PairObjective):
    """CLAPP with Tang et al.'s deformations (:func:`clapp_loss`; METHODS.md 3.5, ambiguity A11).

    ``W_pred`` lives in the objective's state (:class:`Predictor`, from ``init_state``) and learns inside
    ``error`` by its own plain gradient step ``W_pred <- W_pred - pred_lr dL/dW_pred`` (after ``dL/dy`` is
    taken at the old ``W_pred``). Keys: ``pred_lr``, ``pred_init`` ("identity" | "torch": U(+-1/sqrt(n))
    seeded by ``pred_seed``), plus the view keys.
    """

    pred_lr: float = param(1e-3, low=0.0, help="learning rate of W_pred's plain gradient step")
    pred_init: str = param("identity", choices=("identity", "torch"), help="W_pred at the start: identity or U(+-1/sqrt(n))")
    pred_seed: int = param(0, low=0, help="seed of the 'torch' initialisation of W_pred")

    def init_state(self, n_out: int, output_dropout: float = 0.0) -> Predictor:
        """The prediction matrix ``W_pred`` (``n_out x n_out``)."""
        return Predictor(n_out, self.pred_init, self.pred_seed)

    def error(self, y: torch.Tensor, state: Predictor, mask: torch.Tensor | None = None, labels=None) -> OutputError:
        """``L`` of :func:`clapp_loss`, ``dL/dy`` by autograd; then ``W_pred -= pred_lr dL/dW_pred``."""
        if not isinstance(state, Predictor):
            raise ParameterError(f"CLAPP: state must be the Predictor made by init_state, got {type(state).__name__}")
        self.split(y, "CLAPP")
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            W = state.W.detach().to(y.dtype).requires_grad_(True)
            zA, zB = self.split(yy, "CLAPP")
            loss = clapp_loss(zA, zB, W)
            grad, gW = torch.autograd.grad(loss, (yy, W))
        with torch.no_grad():
            state.W -= self.pred_lr * gW.to(state.W.dtype)
        return OutputError(loss=loss.detach(), grad=grad)


# ----------------------------------------------------------------------------- locality (METHODS.md section 8)
def hinge_top_checkable(sizes, grad_block: bool = True, gate: str = "circuit", sign: str = "memory") -> Checkable:
    """The contrastive hinge's top-layer update, one presentation per sample (Tang et al. 2022, eqs. 3 and 7).

    Populations ``h`` (``sizes[0]`` cells below the top layer) and ``z`` (``sizes[1]`` top cells). Per sample
    ``b`` (a positive or a negative presentation of the sequential mode, METHODS.md 3.2): the current pre
    activity ``x_b`` (cells of ``h``), the current top activity ``z_b`` (cells of ``z``), the memory ``M_b``
    (a trace of ``z``: the anchor's ``z^A`` held by the short-term memory), and the hinge circuit's signed
    gate ``g_b`` (a per-sample scalar: ``1[||M - z||_1 > m1]`` on a positive, ``-w 1[||M - z||_1 < m2]`` on
    a negative). Each top cell's error sign is the circuit's rectified difference units at that cell,
    ``sgn(M_i - z_i) = H(D+_i) - H(D-_i)``:

        dW_ij = sum_b g_b sgn(M_bi - z_bi) x_bj                         (grad block, eq. 7)
        dW_ij = sum_b g_b sgn(M_bi - z_bi) (x_bj - x^A_bj)              (no block, eq. 3: x^A a replayed trace of h)

    (``-eta delta_i x_j`` with ``delta^B_i = -G_pos sgn(z^A_i - z^B_i)``, ``delta^Bt_i = w G_neg sgn(...)``.)
    ``sign="memory"`` computes ``sgn(M_i - z_i)`` in the update from the cell's own trace and activity (so the
    checker sees that it reads nothing else); ``sign="circuit"`` takes it as the signal ``e_i`` the hinge
    circuit delivers to cell ``i`` through the pathway ``"hinge error"`` (``Signal``).
    ``gate="circuit"`` takes ``g_b`` from the circuit (local); ``gate="computed"`` computes the gate in the
    update from all top cells, ``1[||M - z||_1 > 1]`` (the opposite case: depends on other cells).
    """
    n_pre, n_out = int(sizes[0]), int(sizes[1])
    if gate not in ("circuit", "computed"):
        raise ParameterError(f"hinge_top_checkable: gate must be 'circuit' or 'computed', got {gate!r}")
    if sign not in ("memory", "circuit"):
        raise ParameterError(f"hinge_top_checkable: sign must be 'memory' or 'circuit', got {sign!r}")
    entries = {"x": Cells("h"), "z": Cells("z"), "M": Trace("z")}
    if sign == "circuit":
        entries["e"] = Signal("z", HINGE_PATHWAY)
    if not grad_block:
        entries["xA"] = Trace("h")
    if gate == "circuit":
        entries["g"] = SampleScalar("hinge gate")
    spec = StateSpec({"h": n_pre, "z": n_out}, (Layer("W", post="z", pre="h"),), entries)
    contract = Contract("hinge top layer" + ("" if grad_block else ", no grad block"),
                        allows={"pre", "post", "trace", "neuron_signal", "global_scalar"}, pathways=(HINGE_PATHWAY,))

    def fn(s):
        e = torch.sign(s["M"] - s["z"]) if sign == "memory" else s["e"]
        g = s["g"] if gate == "circuit" else ((s["M"] - s["z"]).abs().sum(1) > 1.0).to(e.dtype)
        pre = s["x"] if grad_block else s["x"] - s["xA"]
        return {"W": (g[:, None] * e).T @ pre}

    name = "Contrastive hinge top layer" + (" (grad block)" if grad_block else " (no grad block)")
    name += "" if sign == "memory" else ", error from the circuit"
    return Checkable(name + ("" if gate == "circuit" else ", gate computed in the update"), spec, {"W": contract}, fn)


def simclr_top_checkable(sizes, tau: float = 0.1) -> Checkable:
    """SimCLR's top-layer update (Tang et al. 2022, eq. 1), one image's two views per sample: populations
    ``h`` (``sizes[0]``) and ``z`` (``sizes[1]``), entries ``xA``, ``xB`` (pre activities of views A and B),
    ``zA``, ``zB`` (top activities);

        dW = -(dL/dz^A)^T x^A - (dL/dz^B)^T x^B,      L = simclr_loss(z^A, z^B, tau)  (gradient: simclr_errors)

    The error of a top cell reads every top cell (unit normalisation) and every other sample (the softmax
    over the batch): non-local, even under the most generous contract a hinge circuit is given.
    """
    n_pre, n_out = int(sizes[0]), int(sizes[1])
    entries = {"xA": Cells("h", "A"), "xB": Cells("h", "B"), "zA": Cells("z", "A"), "zB": Cells("z", "B")}
    spec = StateSpec({"h": n_pre, "z": n_out}, (Layer("W", post="z", pre="h"),), entries)
    contract = Contract("SimCLR top layer", allows={"pre", "post", "trace", "neuron_signal", "global_scalar"},
                        pathways=(HINGE_PATHWAY,))

    def fn(s):
        _, gA, gB = simclr_errors(s["zA"], s["zB"], tau)
        return {"W": -(gA.T @ s["xA"] + gB.T @ s["xB"])}

    return Checkable("SimCLR top layer", spec, {"W": contract}, fn)


def _hinge_top_block(s):
    return hinge_top_checkable(s, grad_block=True)


def _hinge_top_noblock(s):
    return hinge_top_checkable(s, grad_block=False)


def _hinge_top_circuit(s):
    """The top layer of ``error_source = "circuit"``: gate and per-cell sign both delivered by the hinge circuit."""
    return hinge_top_checkable(s, grad_block=True, sign="circuit")


def _simclr_top(s):
    return simclr_top_checkable(s)


register_check(_hinge_top_block, 2, True, label="contrastive hinge top layer, grad block")
register_check(_hinge_top_noblock, 2, True, label="contrastive hinge top layer, no grad block")
register_check(_hinge_top_circuit, 2, True, label="contrastive hinge top layer, gate and error from the circuit")
register_check(_simclr_top, 2, False, {"batch statistics", "depends on other cells of the layer"},
               label="SimCLR top layer")
