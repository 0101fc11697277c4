"""Pair objectives against their equations: Tang et al. 2022's contrastive hinge (eqs. 2, 4-7), SimCLR (eq. 1),
CLAPP with deformations (METHODS.md 3.5); their top-layer locality verdicts; recipe keys; a short training run."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn import recipe as recipes
from neurolearn._validate import ParameterError
from neurolearn.credit import Backprop
from neurolearn.data import load_digits
from neurolearn.locality import Contract, check
from neurolearn.locality.report import builtin_checks
from neurolearn.networks.feedforward import FeedForward
from neurolearn.networks.layers import Conv, Dense
from neurolearn.objectives.contrastive import (CLAPP, ContrastiveHinge, Predictor, SimCLR, clapp_loss, hinge_errors,
                                               hinge_top_checkable, l1_sign_sums, simclr_errors, simclr_loss,
                                               simclr_top_checkable)
from neurolearn.train import Trainer

NEGATIVES = ["all", 2, 3, 5]


def _autograd_hinge(zA, zB, m1, m2, negatives, weighting, grad_block):
    """Eq. 2 written out pair by pair, differentiated by autograd (the block: zA detached)."""
    zA = zA.detach().clone().requires_grad_(True)
    zB = zB.detach().clone().requires_grad_(True)
    a = zA.detach() if grad_block else zA
    n = zA.shape[0]
    loss = zA.new_zeros(())
    for s in range(n):
        loss = loss + torch.relu((a[s] - zB[s]).abs().sum() - m1)
        if negatives == "all":
            ts, w = [t for t in range(n) if t != s], 1.0
        else:
            ts, w = range(s + 1, min(s + negatives, n)), (1.0 / negatives if weighting == "code" else 1.0)
        for t in ts:
            loss = loss + w * torch.relu(m2 - (a[s] - zB[t]).abs().sum())
    gA, gB = torch.autograd.grad(loss, (zA, zB), allow_unused=True)
    return loss.detach(), (torch.zeros_like(zA) if gA is None else gA), gB


def _agrees(closed, zA, zB, m1, m2, negatives, weighting, grad_block) -> bool:
    ref = _autograd_hinge(zA, zB, m1, m2, negatives, weighting, grad_block)
    return all(torch.allclose(c, r, atol=1e-10) for c, r in zip(closed, ref))


@st.composite
def _pairs(draw):
    """(zA, zB): half the time from a few levels, so that equal entries (sgn 0), zero rows and distances exactly
    at a margin (gates at their threshold) are common."""
    n, d = draw(st.integers(1, 7)), draw(st.integers(1, 4))
    if draw(st.booleans()):
        el = st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.5])
    else:
        el = st.floats(-3, 3, allow_nan=False, width=32)
    rows = st.lists(st.lists(el, min_size=d, max_size=d), min_size=n, max_size=n)
    return torch.tensor(draw(rows), dtype=torch.float64), torch.tensor(draw(rows), dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(_pairs(), st.sampled_from(NEGATIVES), st.sampled_from(["code", "paper"]), st.booleans(),
       st.sampled_from([(1.0, 1.5), (0.5, 1.0), (1.0, 3.0)]))
def test_hinge_closed_form_equals_autograd(pair, negatives, weighting, grad_block, margins):
    zA, zB = pair
    m1, m2 = margins
    assert _agrees(hinge_errors(zA, zB, m1, m2, negatives, weighting, grad_block), zA, zB, m1, m2, negatives,
                   weighting, grad_block)


def _one_case():
    g = torch.Generator().manual_seed(0)
    zA = torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.35  # distances on both sides of the margins
    return zA, zA + 0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("negatives", NEGATIVES)
def test_hinge_comparison_catches_a_wrong_margin_or_a_missing_gate(negatives):
    """The opposite case: the same comparison rejects a closed form with a wrong margin or without a gate."""
    zA, zB = _one_case()
    args = (1.0, 1.5, negatives, "code", True)
    assert _agrees(hinge_errors(zA, zB, *args), zA, zB, *args)
    assert not _agrees(hinge_errors(zA, zB, 1.0, 2.5, negatives, "code", True), zA, zB, *args)  # wrong m2
    assert not _agrees(hinge_errors(zA, zB, 0.2, 1.5, negatives, "code", True), zA, zB, *args)  # wrong m1
    assert not _agrees(hinge_errors(zA, zB, -1e9, 1.5, negatives, "code", True), zA, zB, *args)  # positive gate always on
    assert not _agrees(hinge_errors(zA, zB, *args[:4], False), zA, zB, *args)  # the block not applied
    if negatives != "all":
        assert not _agrees(hinge_errors(zA, zB, 1.0, 1.5, negatives, "paper", True), zA, zB, *args)  # wrong weight


def test_hinge_gradient_block_leaves_gB_alone_and_zeroes_gA():
    zA, zB = _one_case()
    _, gA, gB = hinge_errors(zA, zB, 1.0, 1.5, 3, "code", True)
    _, gA2, gB2 = hinge_errors(zA, zB, 1.0, 1.5, 3, "code", False)
    assert torch.equal(gA, torch.zeros_like(gA)) and gA2.abs().sum() > 0 and torch.equal(gB, gB2)


@settings(max_examples=30, deadline=None)
@given(_pairs(), st.integers(0, 2**31 - 1))
def test_l1_sign_sums_are_the_sums_of_signs(pair, seed):
    """sum_t C_st sgn(zA_s - zB_t) and sum_s C_st sgn(zA_s - zB_t) written out (sgn(0) = 0, ties drawn)."""
    zA, zB = pair
    C = torch.randn(zA.shape[0], zB.shape[0] - 1 if zB.shape[0] > 1 else 1, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    zB = zB[: C.shape[1]]
    signs = torch.sign(zA[:, None, :] - zB[None, :, :])
    sA, sB, dist = l1_sign_sums(zA, zB, C)
    assert torch.allclose(sA, (C[:, :, None] * signs).sum(1)) and torch.allclose(sB, (C[:, :, None] * signs).sum(0))
    assert torch.allclose(dist, (zA[:, None, :] - zB[None, :, :]).abs().sum(2))
    sA2, _, _ = l1_sign_sums(zA, zB, lambda d: C * (d > 0.5))  # a gate of the distances
    assert torch.allclose(sA2, ((C * (dist > 0.5))[:, :, None] * signs).sum(1))
    none, sB2, _ = l1_sign_sums(zA, zB, C, need_a=False)
    assert none is None and torch.allclose(sB2, sB)


def test_contrastive_hinge_error_and_present():
    obj = ContrastiveHinge(negatives=5, weighting="paper", m2=3.0)
    x = torch.rand(4, 1, 8, 8)
    xx, ll = obj.present(x, torch.arange(4), torch.Generator().manual_seed(0))
    assert xx.shape == (8, 1, 8, 8) and torch.equal(ll, torch.arange(4).repeat(2))
    assert not torch.equal(xx[:4], xx[4:])  # two independent views
    y = torch.randn(8, 3, dtype=torch.float64)
    out = obj.error(y, None)
    loss, gA, gB = hinge_errors(y[:4], y[4:], 1.0, 3.0, 5, "paper", True)
    assert torch.equal(out.loss, loss) and torch.equal(out.grad, torch.cat([gA, gB])) and out.target is None
    assert ContrastiveHinge().present(x, None, torch.Generator())[1] is None


def test_hinge_parameter_errors():
    with pytest.raises(ParameterError, match="negatives"):
        ContrastiveHinge(negatives=1)
    with pytest.raises(ParameterError, match="negatives"):
        ContrastiveHinge(negatives=-2)
    with pytest.raises(ParameterError, match="weighting"):
        ContrastiveHinge(weighting="mean")
    with pytest.raises(ParameterError, match="view"):
        ContrastiveHinge(view="crop")
    with pytest.raises(ParameterError, match="2B rows"):
        ContrastiveHinge().error(torch.zeros(5, 3), None)
    with pytest.raises(ParameterError, match="negatives"):
        hinge_errors(torch.zeros(2, 2), torch.zeros(2, 2), negatives=1)
    with pytest.raises(ParameterError, match="same shape"):
        hinge_errors(torch.zeros(2, 2), torch.zeros(3, 2))


def _simclr_direct(zA, zB, tau):
    """Eq. 1 term by term: -log exp(sim(a_s, b_s)/tau) / (sum_{t!=s} exp(sim(a_s, a_t)/tau) + sum_t exp(sim(a_s, b_t)/tau)),
    averaged over anchors, both directions summed."""
    def sim(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    n = zA.shape[0]
    total = 0.0
    for P, Q in ((zA, zB), (zB, zA)):
        for s in range(n):
            den = sum(math.exp(sim(P[s], P[t]) / tau) for t in range(n) if t != s)
            den += sum(math.exp(sim(P[s], Q[t]) / tau) for t in range(n))
            total += -math.log(math.exp(sim(P[s], Q[s]) / tau) / den) / n
    return total


def test_simclr_against_the_direct_formula_and_autograd():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(6, 4, generator=g, dtype=torch.float64)
    obj = SimCLR(tau=0.5)
    out = obj.error(y, None)
    assert math.isclose(float(out.loss), _simclr_direct(y[:3], y[3:], 0.5), rel_tol=1e-10)
    assert not math.isclose(float(out.loss), _simclr_direct(y[:3], y[3:], 0.1), rel_tol=1e-3)  # tau matters
    h = 1e-6  # the gradient against central differences of the direct formula
    for idx in [(0, 0), (4, 2)]:
        yp, ym = y.clone(), y.clone()
        yp[idx] += h
        ym[idx] -= h
        fd = (_simclr_direct(yp[:3], yp[3:], 0.5) - _simclr_direct(ym[:3], ym[3:], 0.5)) / (2 * h)
        assert math.isclose(float(out.grad[idx]), fd, rel_tol=1e-5, abs_tol=1e-8)
    assert torch.allclose(simclr_loss(y[:3], y[3:], 0.5), out.loss)


def test_simclr_closed_form_gradient_equals_autograd():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(10, 3, generator=g, dtype=torch.float64)
    for tau in (0.1, 0.5):
        loss, gA, gB = simclr_errors(y[:5], y[5:], tau)
        out = SimCLR(tau=tau).error(y, None)
        assert torch.allclose(loss, out.loss) and torch.allclose(torch.cat([gA, gB]), out.grad, atol=1e-12)
    y[3] = 0.0  # a silent top layer: F.normalize's floor
    _, gA, gB = simclr_errors(y[:5], y[5:], 0.1)
    assert torch.allclose(torch.cat([gA, gB]), SimCLR().error(y, None).grad, rtol=1e-6)
    _, gA_wrong, _ = simclr_errors(y[:5], y[5:], 0.2)  # the opposite case: another tau is caught
    assert not torch.allclose(gA_wrong, gA)


def test_clapp_loss_gradient_and_predictor_step():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.7
    obj = CLAPP(pred_lr=0.1, pred_init="torch", pred_seed=3)
    state = obj.init_state(3)
    assert isinstance(state, Predictor) and "W" in state.state_dict()  # the trainer checkpoints it
    W0 = state.W.double().clone()
    zA, zB = y[:3], y[3:]
    sc = zB @ W0 @ zA.T  # sc[t, s] = score(zB_t, zA_s)
    direct = sum(max(0.0, 1 - float(sc[s, s])) for s in range(3)) / 3
    direct += sum(max(0.0, 1 + float(sc[t, s])) for s in range(3) for t in range(3) if t != s) / 6
    out = obj.error(y, state)
    assert math.isclose(float(out.loss), direct, rel_tol=1e-6)
    gW = torch.zeros(3, 3, dtype=torch.float64)  # dL/dW_pred written out
    for s in range(3):
        if sc[s, s] < 1:
            gW -= torch.outer(zB[s], zA[s]) / 3
        for t in range(3):
            if t != s and sc[t, s] > -1:
                gW += torch.outer(zB[t], zA[s]) / 6
    assert torch.allclose(state.W.double(), W0 - 0.1 * gW, atol=1e-6)
    ref = y.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad(clapp_loss(ref[:3], ref[3:], W0), ref)
    assert torch.allclose(out.grad, gy)
    with pytest.raises(ParameterError, match="Predictor"):
        obj.error(y, None)


def test_clapp_identity_init():
    assert torch.equal(CLAPP().init_state(4).W, torch.eye(4))


# ----------------------------------------------------------------------------- locality
def test_hinge_top_layer_is_local_with_the_circuit_gate():
    for block in (True, False):
        r = check(lambda s, b=block: hinge_top_checkable(s, grad_block=b), n_populations=2, max_examples=8,
                  time_budget_s=8)
        assert r.local, str(r)


def test_hinge_top_layer_with_the_error_from_the_circuit():
    """The per-cell error as a signal of the declared pathway "hinge error": local; the same update under a
    contract that does not declare the pathway is not (the opposite case)."""
    ch = hinge_top_checkable([3, 2], sign="circuit")
    assert check(ch, max_examples=6, time_budget_s=5).local
    bare = Contract("no pathway", allows={"pre", "post", "trace", "global_scalar"})
    r = check(dataclasses.replace(ch, contracts={"W": bare}), max_examples=6, time_budget_s=5)
    assert not r.local and "undeclared pathway 'hinge error'" in r.kinds


def test_hinge_top_layer_with_the_gate_computed_in_the_update_is_not_local():
    """The opposite case: the gate computed from every top cell, not delivered by the circuit."""
    r = check(lambda s: hinge_top_checkable(s, gate="computed"), n_populations=2, max_examples=8, time_budget_s=8)
    assert not r.local and "depends on other cells of the layer" in r.kinds


def test_simclr_top_layer_is_not_local():
    r = check(simclr_top_checkable, n_populations=2, max_examples=4, time_budget_s=2)
    assert not r.local and {"batch statistics", "depends on other cells of the layer"} <= r.kinds


def test_checks_are_in_the_catalogue():
    rows = {(getattr(f, "__name__", ""), local) for f, n, local, kinds in builtin_checks()}
    assert {("_hinge_top_block", True), ("_hinge_top_noblock", True), ("_simclr_top", False)} <= rows


# ----------------------------------------------------------------------------- recipe and training
def test_recipe_resolves_the_hinge_and_its_keys():
    text = "[objective]\ntype = 'contrastive_hinge'\nm2 = 3.0\nnegatives = 5\nweighting = 'paper'\naffine_fraction = 1.0\n"
    r = recipes.resolve(text, "t.toml")
    o = r["objective"]
    assert o["type"] == "contrastive_hinge" and o["m2"] == 3.0 and o["negatives"] == 5 and o["weighting"] == "paper"
    assert o["m1"] == 1.0 and o["grad_block"] is True and o["view"] == "tang_affine" and o["affine_fraction"] == 1.0
    assert recipes.describe_recipe(r)["objective"] == ContrastiveHinge(m2=3.0, negatives=5, weighting="paper",
                                                                       affine_fraction=1.0)
    with pytest.raises(recipes.RecipeError, match="unknown key 'margin'"):
        recipes.resolve("[objective]\ntype = 'contrastive_hinge'\nmargin = 2\n", "t.toml")
    with pytest.raises(recipes.RecipeError, match="negatives"):
        recipes.resolve("[objective]\ntype = 'contrastive_hinge'\nnegatives = 1\n", "t.toml")
    for name in ("simclr", "clapp"):
        assert recipes.resolve(f"[objective]\ntype = '{name}'\n", "t.toml")["objective"]["type"] == name


def test_training_with_the_hinge_lowers_its_loss():
    torch.manual_seed(0)
    d = load_digits()
    x = torch.nn.functional.pad(d.x_train[:120].reshape(-1, 1, 8, 8), (2, 2, 2, 2))
    net = FeedForward((1, 12, 12), [Conv(4, 3, padding=1, pool="max"), Dense(8, bias=False, activation="identity")],
                      hidden_activation="tanh", init="torch", seed=0)
    obj = ContrastiveHinge(negatives=5)

    def held_out_loss():
        xx, _ = obj.present(x, None, torch.Generator().manual_seed(123))
        with torch.no_grad():
            return float(obj.error(net(xx), None).loss)

    before = held_out_loss()
    Trainer(net, obj, Backprop(), {"epochs": 3, "batch_size": 40, "optimizer": "adam", "lr": 1e-2, "schedule": "none"},
            seed=0, progress=False).fit(x)
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_objectives_on_cuda_equal_cpu():
    zA, zB = _one_case()
    for negatives in NEGATIVES:
        for a, b in zip(hinge_errors(zA.cuda(), zB.cuda(), 1.0, 1.5, negatives, "code", False),
                        hinge_errors(zA, zB, 1.0, 1.5, negatives, "code", False)):
            assert torch.allclose(a.cpu(), b)
    y = torch.cat([zA, zB])
    assert torch.allclose(SimCLR().error(y.cuda(), None).grad.cpu(), SimCLR().error(y, None).grad)
    obj = CLAPP()
    sc, sg = obj.init_state(4), obj.init_state(4).cuda()
    assert torch.allclose(obj.error(y.cuda(), sg).grad.cpu(), obj.error(y, sc).grad)
    assert torch.allclose(sg.W.cpu(), sc.W)
    xx, _ = ContrastiveHinge().present(torch.rand(3, 1, 8, 8).cuda(), None, torch.Generator().manual_seed(0))
    assert xx.device.type == "cuda" and xx.shape == (6, 1, 8, 8)
