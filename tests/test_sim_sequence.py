"""Memory and hinge error circuit coupled in one Brian2 network (Tang et al. 2022, Section 3.1 and App. A): the
spiking sequence (store, positive, K negatives, reset) against the rate form (ShortTermMemory + HingeError)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn._validate import ParameterError
from neurolearn.circuits.hinge_error import HingeError
from neurolearn.circuits.memory import ShortTermMemory

# Brian2 numpy target, dt = 0.2 ms (as tests/test_memory.py): the rates here stay below 0.5 / dt.
FAST = {"dt": 2e-4}
M1, M2 = 1.0, 1.5
LEVELS = np.arange(-4, 5) / 4                  # values on a grid of 0.25: ties (M_i = z_i) are common
# Tolerances (measured, see docs/tang2022.md "Memory and circuit coupled in Brian2"): a rate read from spike
# counts in the read window is resolved to 1 / (r_0 read) = 1 / (200 Hz x 0.2 s) = 0.025 of a unit.
MEMORY_TOLERANCE = 0.03     # the memory pools' held value and the circuit's memory units: one spike (0.025) off
S_TOLERANCE = 0.05          # the summing unit: two spikes in the read window (as tests/test_hinge_circuit.py)
GRADED_TOLERANCE = 0.05     # graded per-cell error (D+ - D-) x gate: two spikes of a D unit
MARGIN = 0.25               # drawn inputs keep ||M - z||_1 at least this far from m1 and m2 (gates readable)
S_MAX = 4.0                 # and at most this: G+ fires at gate_gain (S - m1) r_0, below 0.5 / dt


def draw_sequence(seed: int):
    """A drawn sequence (anchor ``(trials, n)``, positive, negatives ``(K, trials, n)``): 4 trials, n in 2..4, K in
    2..3, values on the 0.25 grid; the positive is the anchor moved by up to 0.5 per cell, each negative is either
    such a near view or an independent draw (so both gate values occur). Trials whose distance to the anchor is
    within MARGIN of m1 or m2 (at the threshold a gate is a coin flip) or beyond S_MAX in any presentation are
    drawn again."""
    rng = np.random.default_rng(seed)
    n, K, trials = int(rng.integers(2, 5)), int(rng.integers(2, 4)), 4
    rows = []
    while len(rows) < trials:
        a = rng.choice(LEVELS, n)
        views = [np.clip(a + rng.choice(LEVELS[2:7], n), -1, 1)]
        for _ in range(K):
            views.append(np.clip(a + rng.choice(LEVELS[2:7], n), -1, 1) if rng.random() < 0.5 else rng.choice(LEVELS, n))
        d = np.abs(np.array(views) - a).sum(-1)
        if np.all(np.abs(d - M1) >= MARGIN) and np.all(np.abs(d - M2) >= MARGIN) and d.max() <= S_MAX:
            rows.append((a, np.array(views)))
    A = np.stack([r[0] for r in rows])
    views = np.stack([r[1] for r in rows], axis=1)          # (1 + K, trials, n)
    return A, views[0], views[1:]


def _run(seed, memory, circuit, **kw):
    from neurolearn.sim.brian2_sequence import rate_presentation_sequence, spiking_presentation_sequence

    A, B, N = draw_sequence(seed)
    w_neg = 1.0 / N.shape[0]
    out = spiking_presentation_sequence(A, B, N, memory, circuit, w_neg=w_neg, circuit_spiking=FAST, seed=seed, **kw)
    ref = rate_presentation_sequence(A, B, N, ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2, graded=circuit.graded),
                                     w_neg=w_neg)
    return A, out, ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coupled_sequence_equals_the_rate_form(seed):
    """Held memory (w = 1), intact circuit, sign as eqs. 5-6: every presentation's gates and per-cell errors equal
    the rate form's exactly; S within S_TOLERANCE; the memory pools hold the anchor and drive the circuit's memory
    units to it (within MEMORY_TOLERANCE); after the reset the memory is empty."""
    A, out, ref = _run(seed, ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2))
    assert 0 < ref["gate"].mean() < 1                                     # both gate values occur in the draw
    assert np.abs(out["memory"] - A).max() <= MEMORY_TOLERANCE
    assert np.abs(out["M"] - A).max() <= MEMORY_TOLERANCE
    assert np.abs(out["S"] - ref["S"]).max() <= S_TOLERANCE
    np.testing.assert_array_equal(out["gate"], ref["gate"])
    np.testing.assert_array_equal(out["G_pos"], ref["G_pos"])
    np.testing.assert_array_equal(out["G_neg"], ref["G_neg"])
    np.testing.assert_array_equal(out["sign"], ref["sign"])
    np.testing.assert_allclose(out["delta"], ref["delta"], rtol=0, atol=1e-12)
    assert np.abs(out["memory_after_reset"]).max() == 0.0


def test_coupled_sequence_graded_errors_within_tolerance():
    """Graded sign (D+ - D-): the per-cell errors are rates; within GRADED_TOLERANCE of the rate form's, gates equal."""
    _, out, ref = _run(3, ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2, graded=True), reset=False)
    np.testing.assert_array_equal(out["gate"], ref["gate"])
    err = np.abs(out["delta"] - ref["delta"]).max()
    assert err <= GRADED_TOLERANCE, err
    assert np.abs(ref["delta"]).max() > 4 * GRADED_TOLERANCE                 # the errors are not all small


# Designed so that every gate depends on the memory: the positive and the negatives are near the anchor
# (||z^A - z||_1 <= 0.75: G+ = 0, G- = 1), but far from an empty memory (||z||_1 >= 2: G+ = 1, G- = 0).
HOLD_ANCHOR = np.array([[1.0, -1.0, 0.5], [-0.75, 1.0, 1.0]])
HOLD_POSITIVE = np.array([[0.75, -1.0, 0.5], [-0.75, 0.5, 1.0]])
HOLD_NEGATIVES = np.array([[[1.0, -0.5, 0.5], [-0.5, 1.0, 0.75]],
                           [[0.75, -0.75, 0.25], [-0.75, 0.75, 0.75]],
                           [[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0]]])


@pytest.mark.parametrize("recurrence", [1.0, 0.9, 0.0])
def test_a_memory_that_does_not_hold_gives_wrong_gates(recurrence):
    """w = 1: gates equal the rate form with the anchor held. Opposite cases: w = 0.9 (the pool's rate drops to
    w s and decays with tau_s / (1 - w) = 1.5 s, 5 presentations): the positive's and the first negative's gates
    are still right, the last negative's is wrong in a trial; w = 0 (no recurrent refresh): the memory is empty
    after the store window and every gate is the wrong one -- while the circuit is right about what it was given
    (its gates are the rate circuit's on M = 0), so the circuit's memory units follow the memory, not the anchor."""
    from neurolearn.sim.brian2_sequence import rate_presentation_sequence, spiking_presentation_sequence

    circuit = HingeError(m1=M1, m2=M2)
    out = spiking_presentation_sequence(HOLD_ANCHOR, HOLD_POSITIVE, HOLD_NEGATIVES, ShortTermMemory(recurrence=recurrence),
                                        circuit, circuit_spiking=FAST, reset=False)
    held = rate_presentation_sequence(HOLD_ANCHOR, HOLD_POSITIVE, HOLD_NEGATIVES, ShortTermMemory(recurrence=1.0), circuit)
    np.testing.assert_array_equal(held["gate"], [[0, 0], [1, 1], [1, 1], [1, 1]])
    gain = (out["memory"] * HOLD_ANCHOR).sum((1, 2)) / (HOLD_ANCHOR ** 2).sum()     # what is left of z^A, per presentation
    if recurrence == 1.0:
        np.testing.assert_array_equal(out["gate"], held["gate"])
        assert np.abs(out["memory"] - HOLD_ANCHOR).max() <= MEMORY_TOLERANCE
    elif recurrence == 0.9:
        assert (np.diff(gain) < 0).all() and gain[-1] < 0.5, gain
        np.testing.assert_array_equal(out["gate"][:2], held["gate"][:2])
        assert (out["gate"][-1] != held["gate"][-1]).any()                   # the last negative's gate is wrong
    else:
        assert np.abs(out["memory"]).max() == 0.0 and np.abs(out["M"]).max() == 0.0
        assert (out["gate"] != held["gate"]).all()                           # every gate is wrong
        views = np.concatenate([HOLD_POSITIVE[None], HOLD_NEGATIVES])
        for k, phase in enumerate(out["phases"]):
            empty = circuit(torch.zeros(2, 3, dtype=torch.float64), torch.tensor(views[k]), phase)
            np.testing.assert_array_equal(out["gate"][k], empty.gate.numpy())


def test_a_broken_inhibitory_copy_changes_the_errors():
    """The opposite case of test_coupled_sequence_equals_the_rate_form[0] (same drawn sequence, there equal to the
    rate form): inhibitory copies at g = 0.5 cancel half of the excitation, S is far from ||M - z||_1 (beyond
    5 S_TOLERANCE), and gates and per-cell errors differ from the intact rate form's."""
    _, out, ref = _run(0, ShortTermMemory(recurrence=1.0), HingeError(m1=M1, m2=M2, inhibition_gain=0.5), reset=False)
    s_err, d_err = np.abs(out["S"] - ref["S"]).max(), np.abs(out["delta"] - ref["delta"]).max()
    assert s_err > 5 * S_TOLERANCE and d_err > 0.1, (s_err, d_err)
    assert (out["gate"] != ref["gate"]).any() and (out["sign"] != ref["sign"]).any()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1.0, 0.8, 0.0]), st.booleans())
def test_rate_sequence_is_write_step_read_and_eqs_5_6(seed, recurrence, graded):
    """The rate reference: M = z^A exp(-(1 - w) k / retention) at presentation k (1 = positive) and the circuit's
    gates and errors are eqs. 5-6 on (M, z) (closed form here, without the circuit's classes)."""
    from neurolearn.sim.brian2_sequence import rate_presentation_sequence

    rng = np.random.default_rng(seed)
    A, views = rng.normal(size=(3, 2)), rng.normal(size=(3, 3, 2))
    mem = ShortTermMemory(retention=0.5, recurrence=recurrence)
    ref = rate_presentation_sequence(A, views[0], views[1:], mem, HingeError(m1=M1, m2=M2, graded=graded), w_neg=0.5)
    for k in range(3):
        M = A * np.exp(-(1 - recurrence) * (k + 1) / 0.5)
        d = np.abs(M - views[k]).sum(-1)
        sign = M - views[k] if graded else np.sign(M - views[k])
        gate = (d > M1) if k == 0 else (d < M2)
        coef = -1.0 if k == 0 else 0.5
        np.testing.assert_allclose(ref["memory"][k], M, rtol=1e-12)
        np.testing.assert_array_equal(ref["gate"][k], gate.astype(float))
        np.testing.assert_allclose(ref["delta"][k], coef * gate[:, None] * sign, atol=1e-12)


def test_sequence_refuses_bad_input():
    from neurolearn.sim.brian2_sequence import rate_presentation_sequence, spiking_presentation_sequence

    a, b, neg = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2, 3))
    with pytest.raises(ParameterError, match="positive must have the anchor's shape"):
        spiking_presentation_sequence(a, np.zeros((2, 2)), neg)
    with pytest.raises(ParameterError, match="negatives must have shape"):
        spiking_presentation_sequence(a, b, np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="anchor must be finite"):
        spiking_presentation_sequence(np.full((2, 3), np.nan), b, neg)
    with pytest.raises(ParameterError, match="memory must be a ShortTermMemory"):
        spiking_presentation_sequence(a, b, neg, memory="x")
    with pytest.raises(ParameterError, match="store_pre"):
        rate_presentation_sequence(a, b, neg, memory=ShortTermMemory(store_pre=True))
    with pytest.raises(ParameterError, match="circuit must be a HingeError"):
        spiking_presentation_sequence(a, b, neg, circuit=ShortTermMemory())
    with pytest.raises(ParameterError, match="unknown memory_spiking key 'dt'"):
        spiking_presentation_sequence(a, b, neg, memory_spiking={"dt": 1e-4})
    with pytest.raises(ParameterError, match="unknown key 'bogus'"):
        spiking_presentation_sequence(a, b, neg, circuit_spiking={"bogus": 1})
    with pytest.raises(ParameterError, match="w_neg"):
        spiking_presentation_sequence(a, b, neg, w_neg=-1.0)
    with pytest.raises(ParameterError, match="fire more than every other step"):
        spiking_presentation_sequence(a + 1, b, neg, circuit_spiking={"dt": 1e-3})
    with pytest.raises(ParameterError, match="pool"):
        spiking_presentation_sequence(a, b, neg, memory_spiking={"pool": 0})
