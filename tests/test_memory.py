"""Short-term memory (Tang et al. 2022, Section 3.1): rate form against its equation, spiking form held / not held."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn._validate import ParameterError
from neurolearn.circuits import circuit_params
from neurolearn.circuits.memory import ShortTermMemory, default_memory
from neurolearn.describe import lookup

# a decoded pattern counts as recovered when it correlates with the written one at >= 0.95 and its
# least-squares gain is within 10% of 1
RECOVERED_CORRELATION, RECOVERED_GAIN = 0.95, 0.1


def recovered(written, decoded) -> bool:
    from neurolearn.sim.brian2_memory import recovery

    corr, gain = recovery(written, decoded)
    return corr >= RECOVERED_CORRELATION and abs(gain - 1.0) <= RECOVERED_GAIN


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 5.0), st.floats(0.0, 1.0), st.integers(0, 6), st.integers(1, 4), st.integers(1, 5))
def test_rate_memory_follows_its_equation(retention, w, p, batch, n):
    """M after p presentations = z^A exp(-(1 - w) p / retention), each anchor (row) its own pattern."""
    mem = ShortTermMemory(retention=retention, recurrence=w)
    g = torch.Generator().manual_seed(p + 7 * batch + 31 * n)
    z = torch.randn(batch, n, generator=g, dtype=torch.float64)
    s = mem.write(mem.init_state(batch, n, dtype=torch.float64), z)
    for _ in range(p):
        s = mem.step(s)
    expected = z * math.exp(-(1 - w) * p / retention)
    assert torch.allclose(mem.read(s), expected, rtol=1e-12, atol=1e-15)
    assert mem.holds(p, 0.05) == (math.exp(-(1 - w) * p / retention) >= 0.95)


def test_memory_holds_with_recurrence_and_decays_without():
    """w = 1 keeps the pattern exactly over 1 + K presentations; w = 0 (no refresh) loses it; reset clears it."""
    z = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
    held, leaky = ShortTermMemory(retention=0.5, recurrence=1.0), ShortTermMemory(retention=0.5, recurrence=0.0)
    for mem, holds in ((held, True), (leaky, False)):
        s = mem.write(mem.init_state(2, 3), z)
        for _ in range(3):
            s = mem.step(s)
        assert torch.equal(mem.read(s), z) == holds
        assert mem.holds(3) == holds
        if not holds:
            assert mem.read(s).abs().max() < 0.01 * z.abs().max()
        s = mem.reset(s)
        assert torch.equal(s["M"], torch.zeros_like(z)) and not s["written"].any()
        with pytest.raises(ParameterError, match="holds no pattern"):
            mem.read(s)
    assert held.effective_retention() == math.inf and leaky.effective_retention() == 0.5


def test_memory_keeps_presynaptic_activities_without_grad_block():
    """store_pre keeps x^A_{L-1} (eq. 3 needs it replayed); the write is detached from the graph."""
    mem = ShortTermMemory(store_pre=True, recurrence=1.0)
    z = torch.randn(2, 3, requires_grad=True)
    x = torch.randn(2, 5)
    s = mem.write(mem.init_state(2, 3, n_pre=5), z * 2, x)
    assert torch.equal(s["pre"], x) and not s["M"].requires_grad
    with pytest.raises(ParameterError, match="pre must have shape"):
        mem.write(mem.init_state(2, 3, n_pre=5), z)
    with pytest.raises(ParameterError, match="n_pre"):
        mem.init_state(2, 3)


def test_memory_errors_name_the_parameter():
    for kw, name in (({"retention": 0.0}, "retention"), ({"recurrence": 1.5}, "recurrence"),
                     ({"store_pre": 1}, "store_pre")):
        with pytest.raises(ParameterError, match=name):
            ShortTermMemory(**kw)
    mem = ShortTermMemory()
    with pytest.raises(ParameterError, match="z must have shape"):
        mem.write(mem.init_state(2, 3), torch.zeros(2, 4))
    with pytest.raises(ParameterError, match="presentations"):
        mem.step(mem.init_state(1, 1), -1)
    with pytest.raises(ParameterError, match="batch"):
        mem.init_state(0, 3)


def test_parameter_sets_are_found_and_valid():
    """circuits/short_term_memory.toml and hinge_error.toml are shipped parameter sets of registered circuits."""
    from neurolearn.circuits.hinge_error import HingeError, default_hinge_error

    assert lookup("circuit", "short_term_memory") is ShortTermMemory
    assert lookup("circuit", "hinge_error") is HingeError
    p = circuit_params("short_term_memory")
    assert default_memory().retention == p["retention"] and "pool" in p["spiking"]
    h = circuit_params("hinge_error")
    assert default_hinge_error().m1 == h["m1"] and "tau_syn" in h["spiking"]


# ----------------------------------------------------------------------------- spiking (Brian2, numpy target)
PATTERNS = np.array([[0.8, -0.5, 0.0, 1.2, -1.0], [0.3, 0.9, -0.7, 0.0, 0.5]])


def test_spiking_memory_holds_the_pattern_for_one_plus_K_presentations():
    """w = 1: after the write and 1 + K = 3 presentations the decoded pattern is recovered (corr >= 0.95, gain
    within 10%); in every held window too. The rate form with the same parameters holds it as well."""
    from neurolearn.sim.brian2_memory import recovery, spiking_memory

    mem = ShortTermMemory(retention=0.5, recurrence=1.0)
    out = spiking_memory(PATTERNS, mem, hold=3, pool=10, dt=2e-4, reset=True)
    assert recovered(PATTERNS, out["last"]), recovery(PATTERNS, out["last"])
    for window in out["decoded"][1:4]:
        assert recovered(PATTERNS, window)
    assert not recovered(PATTERNS, out["decoded"][4])      # after the reset: gone
    assert mem.holds(3)


def test_spiking_memory_without_recurrence_does_not_hold():
    """The opposite case: recurrent weight 0 -> the pattern is not recoverable after 1 + K presentations
    (the rate form with the same retention says the same)."""
    from neurolearn.sim.brian2_memory import recovery, spiking_memory

    mem = ShortTermMemory(retention=0.5, recurrence=0.0)
    out = spiking_memory(PATTERNS, mem, hold=3, pool=10, dt=2e-4)
    corr, gain = recovery(PATTERNS, out["decoded"][0])      # it was written: driven at a r_0 / (1 - exp(-T / tau_s))
    assert corr > 0.98 and abs(gain - 1 / (1 - math.exp(-1 / mem.retention))) < 0.05
    assert not recovered(PATTERNS, out["last"]), recovery(PATTERNS, out["last"])
    assert abs(recovery(PATTERNS, out["last"])[1]) < 0.05
    assert not mem.holds(3)


def test_spiking_memory_decays_like_the_rate_form():
    """0 < w < 1: the pool's rate is w s, s decaying as the rate form's M, exp(-(1 - w) t / retention): each held
    window's decoded gain is within 0.05 of w x (the window's mean of the rate form's decay)."""
    from neurolearn.sim.brian2_memory import recovery, spiking_memory

    w, hold = 0.8, 3
    mem = ShortTermMemory(retention=0.5, recurrence=w)
    out = spiking_memory(PATTERNS, mem, hold=hold, pool=10, dt=2e-4)
    lam = (1 - w) / mem.retention                           # per presentation
    for k in range(1, hold + 1):
        expected = w * math.exp(-lam * (k - 1)) * (1 - math.exp(-lam)) / lam
        corr, gain = recovery(PATTERNS, out["decoded"][k])
        assert corr > 0.98 and abs(gain - expected) < 0.05, (k, gain, expected)


def test_spiking_memory_refuses_bad_input():
    from neurolearn.sim.brian2_memory import spiking_memory

    with pytest.raises(ParameterError, match="patterns must be finite"):
        spiking_memory([[np.nan, 1.0]])
    with pytest.raises(ParameterError, match="hold"):
        spiking_memory([[1.0]], hold=-1)
    with pytest.raises(ParameterError, match="memory must be a ShortTermMemory"):
        spiking_memory([[1.0]], memory="x")
