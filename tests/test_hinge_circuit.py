"""The hinge error circuit (Tang et al. 2022, App. A): rate form = closed-form eqs. 4-6; Brian2 form reaches it."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn._validate import ParameterError
from neurolearn.circuits.hinge_error import HingeError

LEVELS = [-1.0, -0.5, 0.0, 0.5, 1.0]          # exact ties between M_i and z_i, zeros, and S exactly at a margin


@st.composite
def _case(draw):
    """Memory ``M`` and current ``z`` (b, n), margins and ``w_neg``: from a few levels half of the time, so that
    ties (sgn 0) and distances exactly at a margin (strict gates) are common."""
    b, n = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    el = st.sampled_from(LEVELS) if draw(st.booleans()) else st.floats(-3, 3, allow_nan=False, width=32)
    rows = st.lists(st.lists(el, min_size=n, max_size=n), min_size=b, max_size=b)
    M, z = torch.tensor(draw(rows), dtype=torch.float64), torch.tensor(draw(rows), dtype=torch.float64)
    m1 = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5]))
    m2 = draw(st.sampled_from([0.5, 1.0, 1.5, 3.0]))
    return M, z, m1, m2, draw(st.sampled_from([1.0, 0.25, 0.2]))


def closed_form(M, z, phase, m1, m2, w_neg):
    """Tang et al. 2022 eqs. 5 and 6 with z^A = M: delta^B = -1[|M - z|_1 > m1] sgn(M - z), delta^Bt =
    w 1[|M - z|_1 < m2] sgn(M - z); and the presentation's hinge term."""
    d = (M - z).abs().sum(1)
    if phase == "positive":
        return -(d > m1).double()[:, None] * torch.sign(M - z), torch.relu(d - m1)
    return w_neg * (d < m2).double()[:, None] * torch.sign(M - z), w_neg * torch.relu(m2 - d)


@settings(max_examples=120, deadline=None)
@given(_case())
def test_rate_circuit_equals_closed_form_hinge_error(case):
    """delta, gate, S and the loss term of both phases equal eqs. 4-6 (ties and margins included)."""
    M, z, m1, m2, w = case
    h = HingeError(m1=m1, m2=m2)
    for phase in ("positive", "negative"):
        out = h(M, z, phase, w)
        delta, loss = closed_form(M, z, phase, m1, m2, w)
        assert torch.equal(out.delta, delta)
        assert torch.equal(out.loss, loss)
        assert torch.allclose(out.S, (M - z).abs().sum(1), rtol=0, atol=0)
        gate = (out.S > m1) if phase == "positive" else (out.S < m2)
        assert torch.equal(out.gate, gate.double())


@settings(max_examples=60, deadline=None)
@given(_case())
def test_circuit_delta_is_the_gradient_of_the_hinge_term(case):
    """delta = d(hinge term)/dz with M held (eq. 7's gradient block) where the gates are not at a margin."""
    M, z, m1, m2, w = case
    d = (M - z).abs().sum(1)
    keep = ((d - m1).abs() > 1e-9) & ((d - m2).abs() > 1e-9) & ((M - z).abs() > 1e-9).all(1)
    if not keep.any():
        return
    M, z = M[keep], z[keep]
    for phase in ("positive", "negative"):
        zz = z.clone().requires_grad_(True)
        dist = (M - zz).abs().sum(1)
        term = torch.relu(dist - m1) if phase == "positive" else w * torch.relu(m2 - dist)
        (g,) = torch.autograd.grad(term.sum(), zz)
        assert torch.allclose(HingeError(m1=m1, m2=m2)(M, z, phase, w).delta, g)


@settings(max_examples=60, deadline=None)
@given(_case(), st.sampled_from([0, 2, 3]), st.sampled_from(["code", "paper"]))
def test_circuit_presentations_sum_to_the_objectives_closed_form(case, negatives, weighting):
    """Running the circuit on every (anchor, presentation) pair of a batch (M = z^A_s; positive z^B_s, negatives
    z^B_t) and summing each B view's deltas gives hinge_errors' gB; minus the sum per anchor gives gA without the
    block (eq. 4); the presentations' hinge terms sum to its loss (Tang et al. 2022, eqs. 2, 4-6)."""
    from neurolearn.objectives.contrastive import hinge_errors

    zA, zB, m1, m2, _ = case
    n = zA.shape[0]
    K = negatives
    w = 1.0 if K == 0 or weighting == "paper" else 1.0 / K
    h = HingeError(m1=m1, m2=m2)
    gA, gB, loss = torch.zeros_like(zA), torch.zeros_like(zB), 0.0
    for s_ in range(n):
        pairs = [(s_, "positive")] + [(t, "negative") for t in (range(s_ + 1, min(s_ + K, n)) if K else
                                                               [t for t in range(n) if t != s_])]
        for t, phase in pairs:
            out = h(zA[s_ : s_ + 1], zB[t : t + 1], phase, w)
            gB[t] += out.delta[0]
            gA[s_] -= out.delta[0]
            loss += float(out.loss)
    ref_loss, ref_gA, ref_gB = hinge_errors(zA, zB, m1, m2, K or "all", weighting, grad_block=False)
    assert torch.allclose(gB, ref_gB, atol=1e-12) and torch.allclose(gA, ref_gA, atol=1e-12)
    assert abs(loss - float(ref_loss)) < 1e-9 * (1 + abs(loss))


def test_units_and_graded_option():
    """Each unit is exposed (u = z, v = M, D+-, S, gates, sign); graded sign = D+ - D- = M - z; 1-D input works."""
    M, z = torch.tensor([[1.0, 0.0, -2.0, 0.5]]), torch.tensor([[0.0, 0.0, 1.0, 0.5]])
    out = HingeError(m1=1.0, m2=5.0)(M, z, "negative", 0.5)
    u = out.units
    assert torch.equal(u["u"], z) and torch.equal(u["v"], M)
    assert torch.equal(u["D_plus"], torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(u["D_minus"], torch.tensor([[0.0, 0.0, 3.0, 0.0]]))
    assert float(u["S"]) == 4.0 and float(u["G_pos"]) == 1.0 and float(u["G_neg"]) == 1.0
    assert torch.equal(out.delta, 0.5 * torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
    graded = HingeError(m1=1.0, m2=5.0, graded=True)(M, z, "negative", 0.5)
    assert torch.equal(graded.units["sign"], M - z)
    one = HingeError(m1=1.0, m2=5.0)(M[0], z[0], "positive")
    assert one.delta.shape == (4,) and one.S.ndim == 0


def test_broken_inhibitory_copy_is_caught():
    """The opposite case: with the inhibitory copies at gain 0.5 the circuit's S is not the L1 distance and its
    error differs from eqs. 5-6 on the drawn inputs -- the equality test above would fail."""
    g = torch.Generator().manual_seed(0)
    M, z = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randn(50, 6, generator=g, dtype=torch.float64)
    broken = HingeError(m1=3.0, m2=6.0, inhibition_gain=0.5)
    mismatched = 0
    for phase in ("positive", "negative"):
        out = broken(M, z, phase)
        delta, _ = closed_form(M, z, phase, 3.0, 6.0, 1.0)
        mismatched += int((out.delta != delta).any(1).sum())
        assert not torch.allclose(out.S, (M - z).abs().sum(1))
    assert mismatched > 10


def test_hinge_error_refuses_bad_input():
    h = HingeError()
    with pytest.raises(ParameterError, match="phase"):
        h(torch.zeros(1, 2), torch.zeros(1, 2), "anchor")
    with pytest.raises(ParameterError, match="same shape"):
        h(torch.zeros(1, 2), torch.zeros(1, 3), "positive")
    with pytest.raises(ParameterError, match="current must be finite"):
        h(torch.zeros(1, 2), torch.tensor([[0.0, float("nan")]]), "positive")
    with pytest.raises(ParameterError, match="w_neg"):
        h(torch.zeros(1, 2), torch.zeros(1, 2), "negative", -1.0)
    for kw, name in (({"m1": -1.0}, "m1"), ({"inhibition_gain": float("inf")}, "inhibition_gain"),
                     ({"graded": "yes"}, "graded")):
        with pytest.raises(ParameterError, match=name):
            HingeError(**kw)


def test_locality_circuit_delivered_update_is_local_and_gate_in_rule_is_not():
    """Top-layer update with the gate and sign delivered by the circuit: local; the gate computed from all cells
    inside the rule: non-local (depends on other cells of the layer). Both are in check-locality's catalogue."""
    from neurolearn.circuits.hinge_error import hinge_circuit_checkable
    from neurolearn.locality import assert_local, assert_nonlocal
    from neurolearn.locality.catalog import catalog

    assert_local(hinge_circuit_checkable(2, 3, "circuit"), max_examples=10)
    assert_nonlocal(hinge_circuit_checkable(2, 3, "inside"), kinds={"depends on other cells of the layer"}, max_examples=10)
    labels = {e.label: e.expected_local for e in catalog()}
    assert labels["hinge circuit: gate and sign delivered"] is True
    assert labels["hinge circuit: gate computed in the rule"] is False


# ----------------------------------------------------------------------------- spiking (Brian2, numpy target)
# Measured (tests below and docs): S within one spike of the rate form (1 / (r_0 read) = 0.025) after the
# settling time; gates and signs exact when |S - m| >= 0.1 and |M_i - z_i| is 0 or >= 0.1.
S_TOLERANCE = 0.05          # two spikes of the summing unit in the read window
SPIKING_CASES = (           # (M, z) per trial; |S - m1|, |S - m2| >= 0.1 with m1 = 1, m2 = 1.5; some ties
    ([0.5, -0.5, 1.0], [0.0, -0.5, 1.0]),      # S = 0.5
    ([1.0, 0.5, -1.0], [0.0, 0.5, 0.0]),       # S = 2.0
    ([-0.5, 0.0, 0.5], [0.5, 0.0, 0.25]),      # S = 1.25
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),        # S = 0
)


def _spiking_vs_rate(circuit_for_spiking):
    from neurolearn.sim.brian2_hinge import spiking_hinge_error

    M = np.array([c[0] for c in SPIKING_CASES])
    z = np.array([c[1] for c in SPIKING_CASES])
    phases = ["positive", "negative"]
    out = spiking_hinge_error(np.stack([M, M]), np.stack([z, z]), phases, 0.5, circuit=circuit_for_spiking)
    rate = HingeError(m1=1.0, m2=1.5)
    worst, same = 0.0, True
    for k, ph in enumerate(phases):
        ref = rate(torch.tensor(M), torch.tensor(z), ph, 0.5)
        worst = max(worst, float(np.abs(out["S"][k] - ref.S.numpy()).max()))
        same &= bool((out["gate"][k] == ref.gate.numpy()).all() and (out["sign"][k] == ref.units["sign"].numpy()).all()
                     and np.allclose(out["delta"][k], ref.delta.numpy()))
    return worst, same


def test_spiking_circuit_reaches_the_rate_steady_state():
    """Brian2 circuit, two presentations (positive, negative) of four inputs: S within S_TOLERANCE of the rate
    form, gates, signs and deltas equal."""
    worst, same = _spiking_vs_rate(HingeError(m1=1.0, m2=1.5))
    assert worst <= S_TOLERANCE, worst
    assert same


def test_spiking_circuit_with_broken_inhibitory_copy_fails_the_comparison():
    """The opposite case: interneuron copies at gain 0.5 -> S far outside the tolerance and the signs/gates differ."""
    worst, same = _spiking_vs_rate(HingeError(m1=1.0, m2=1.5, inhibition_gain=0.5))
    assert worst > 5 * S_TOLERANCE
    assert not same
