"""Rules written once (issue 12, item 6): one Brian2-style description per rule gives the torch update,
the Brian2 Synapses and the locality contract.

For each built-in of the Hebbian family (kWTA Hebbian, Oja, BCM, pair-based STDP): (1) the derived torch
update equals the hand-written equation on drawn inputs; (2) it equals a Brian2 simulation (numpy target)
of the generated Synapses in the rate limit: independent Poisson trains at ``x rate_max`` / ``y rate_max``,
one synapse per (pre, post) pair, the torch update iterated once per window ``1 / rate_max``; per condition
the mean over the synapses agrees within 10 % of the change (plus a noise floor stated per test); (3) the
derived contract is LOCAL under the checker and descriptions that name another cell's variable or another
synapse's weight are rejected, and planted reads are reported NON-LOCAL. Unit errors name the variable.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neurolearn.describe import lookup
from neurolearn.locality import Checkable, Contract, check
from neurolearn.plasticity.bcm import BCM
from neurolearn.plasticity.equations import RuleEquations, RuleError
from neurolearn.plasticity.hebbian_kwta import KWTAHebbian
from neurolearn.plasticity.oja import Oja
from neurolearn.plasticity.stdp import STDP
from neurolearn.sim.brian2_kwta import quiet_brian2

KW = {"max_examples": 12, "time_budget_s": 20.0}
D64 = torch.float64


def _draw(seed, batch, n_pre=4, n_post=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n_pre, generator=g, dtype=D64), torch.rand(batch, n_post, generator=g, dtype=D64),
            torch.rand(n_post, n_pre, generator=g, dtype=D64) * 2 - 0.5, torch.rand(batch, n_post, generator=g, dtype=D64))


# ----------------------------------------------------------------------------- (1) hand-written equations
@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 3), (2, 7)])
def test_torch_updates_equal_the_hand_written_equations(seed, batch):
    x, y, W, theta = _draw(seed, batch)
    k = KWTAHebbian(eta=0.07, c=0.8)
    assert torch.allclose(k.torch_update(x, y, W), 0.07 * sum(torch.outer(y[b], 0.8 * x[b]) - y[b][:, None] * W
                                                               for b in range(batch)), atol=1e-12)
    o = Oja(eta=0.03)
    assert torch.allclose(o.torch_update(x, y, W), 0.03 * sum(y[b][:, None] * (x[b][None] - y[b][:, None] * W)
                                                             for b in range(batch)), atol=1e-12)
    m = BCM(eta=0.05, tau_theta=3.0, rate_max=50.0)
    assert torch.allclose(m.torch_update(x, y, W, theta), 0.05 * sum(torch.outer(y[b] * (y[b] - theta[b]), x[b])
                                                                     for b in range(batch)), atol=1e-12)
    assert torch.allclose(m.torch_traces(y, theta), (y**2 - theta) / (50.0 * 3.0), atol=1e-15)
    s = STDP(A_plus=0.02, A_minus=0.01, tau_plus=0.015, tau_minus=0.03, rate_max=80.0)
    assert torch.allclose(s.torch_update(x, y, W), 80.0 * (0.02 * 0.015 - 0.01 * 0.03) * y.T @ x, atol=1e-15)
    s2 = STDP(A_plus=0.02, A_minus=0.02, tau_plus=0.01, tau_minus=0.03, rate_max=80.0)  # depression wins: sign flips
    assert (torch.sign(s2.torch_update(x, y, W)) == -1).all()
    # the opposite: a wrong hand equation (Oja without its decay) does not match
    assert not torch.allclose(o.torch_update(x, y, W), 0.03 * y.T @ x, atol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_torch_updates_equal_the_hand_written_equations_on_hypothesis_values(data):
    """The same equalities with the values drawn by Hypothesis (zeros, ties, signs, large and tiny
    magnitudes), so a failure shrinks to a printed example."""
    batch, n_pre, n_post = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    val = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)

    def arr(*shape):
        return torch.tensor(data.draw(hnp.arrays(np.float64, shape, elements=val)))

    x, y, W, theta = arr(batch, n_pre), arr(batch, n_post), arr(n_post, n_pre), arr(batch, n_post)
    cases = [
        (KWTAHebbian(eta=0.07, c=0.8).torch_update(x, y, W), 0.07 * (y.T @ (0.8 * x) - y.sum(0)[:, None] * W)),
        (Oja(eta=0.03).torch_update(x, y, W), 0.03 * (y.T @ x - (y * y).sum(0)[:, None] * W)),
        (BCM(eta=0.05).torch_update(x, y, W, theta), 0.05 * ((y * (y - theta)).T @ x)),
        (STDP(rate_max=80.0).torch_update(x, y, W), 80.0 * (0.01 * 0.02 - 0.0105 * 0.02) * y.T @ x),
    ]
    for got, want in cases:
        scale = 1.0 + want.abs().max().item() + (x.abs().max() * y.abs().max() * (y.abs().max() + theta.abs().max()
                                                                                   + W.abs().max())).item()
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12 * scale), (got, want)


def test_derived_rate_limits_and_registration():
    assert str(KWTAHebbian().compiled.rate_limit["w"]) == "d*eta*(c*pre - w)"
    assert str(Oja().compiled.rate_limit["w"]) == "eta*post*(-post*w + pre)"
    assert str(BCM().compiled.rate_limit["theta"]) == "(post**2 - theta)/(rate_max*tau_theta)"
    for name, cls in (("kwta_hebbian", KWTAHebbian), ("oja", Oja), ("bcm", BCM), ("stdp", STDP)):
        assert lookup("rule", name) is cls
    stdp = STDP().brian2_equations()
    assert stdp["on_pre"].splitlines()[0] == "w = clip(w - (A_minus * apost), 0, w_max)"
    assert "(event-driven)" in stdp["model"] and stdp["namespace"]["tau_plus"] == 0.02 * quiet_brian2().second


# ----------------------------------------------------------------------------- (2) Brian2 in the rate limit
def _simulate(eqs, x, y, rate_max, w0, duration, seed, init=None):
    b2 = quiet_brian2()
    b2.prefs.codegen.target = "numpy"
    b2.start_scope()
    b2.seed(seed)
    step = 0.5 * b2.ms
    pre = b2.PoissonGroup(len(x), rates=x * rate_max * b2.Hz, dt=step)
    post = b2.PoissonGroup(len(y), rates=y * rate_max * b2.Hz, dt=step)
    syn = b2.Synapses(pre, post, eqs["model"], on_pre=eqs["on_pre"], on_post=eqs["on_post"],
                      namespace=eqs["namespace"], method="exact", dt=step)
    syn.connect(j="i")
    syn.w = w0
    for name, value in (init or {}).items():
        setattr(syn, name, value)
    net = b2.Network(pre, post, syn)
    net.run(duration * b2.second, namespace={})
    return syn


def _iterate(update, x, y, w0, windows, traces=None):
    """The torch rate limit iterated once per window, every synapse (pair k) as the diagonal entry (k, k)."""
    n = len(x)
    X, Y = torch.tensor(x, dtype=D64)[None], torch.tensor(y, dtype=D64)[None]
    W = torch.full((n, n), w0, dtype=D64)
    state = {k: torch.full((1, n), v, dtype=D64) for k, v in (traces or {}).items()}
    for _ in range(windows):
        dW, dstate = update(X, Y, W, state)
        W = W + dW
        state = {k: state[k] + dstate[k] for k in state}
    return W.diagonal().numpy(), {k: v[0].numpy() for k, v in state.items()}


def _conditions(pairs, m):
    x = np.repeat([p[0] for p in pairs], m)
    y = np.repeat([p[1] for p in pairs], m)
    return x, y


def _mismatch(sim, pred, w0, pairs, m):
    """The conditions where the Brian2 mean change and the torch one differ by more than the stated
    tolerance: 10 % of the torch change plus 3 standard errors of the simulated mean (Poisson noise),
    or have opposite signs; empty when they agree."""
    bad = []
    for c in range(len(pairs)):
        block = slice(c * m, (c + 1) * m)
        got, want = sim[block].mean() - w0, pred[block].mean() - w0
        se = sim[block].std(ddof=1) / np.sqrt(m)
        if abs(got - want) > 0.1 * abs(want) + 3 * se or np.sign(got) != np.sign(want):
            bad.append((pairs[c], round(float(got), 5), round(float(want), 5), round(float(se), 5)))
    return bad


PAIRS = [(0.3, 0.8), (0.8, 0.3), (0.8, 0.8)]
M = 20
DURATION = 10.0
WINDOWS = int(DURATION * 100)  # rate_max = 100 Hz: one window is 10 ms


def _plain(rule):
    return lambda X, Y, W, s: (rule.torch_update(X, Y, W), {})


def test_kwta_hebbian_brian2_matches_torch_in_the_rate_limit():
    """Post spikes at d rate_max (the winners): w moves toward c x as the torch update says; a torch
    update with another c misses."""
    rule = KWTAHebbian(eta=0.003, c=0.9)
    eqs = rule.brian2_equations(rate_max=100.0, tau_pre=0.02)
    x, y = _conditions(PAIRS, M)
    w = np.asarray(_simulate(eqs, x, y, 100.0, 0.5, DURATION, seed=3).w[:])
    assert _mismatch(w, _iterate(_plain(rule), x, y, 0.5, WINDOWS)[0], 0.5, PAIRS, M) == []
    assert _mismatch(w, _iterate(_plain(KWTAHebbian(eta=0.003, c=0.6)), x, y, 0.5, WINDOWS)[0], 0.5, PAIRS, M)


def test_oja_brian2_matches_torch_in_the_rate_limit():
    """Oja's decay y^2 w comes from the post trace at post spikes; plain Hebb (no decay) misses."""
    rule = Oja(eta=5e-4, rate_max=100.0)
    x, y = _conditions(PAIRS, M)
    w = np.asarray(_simulate(rule.brian2_equations(), x, y, 100.0, 0.5, DURATION, seed=4).w[:])
    assert _mismatch(w, _iterate(_plain(rule), x, y, 0.5, WINDOWS)[0], 0.5, PAIRS, M) == []
    hebb = _iterate(lambda X, Y, W, s: (5e-4 * Y.T * X, {}), x, y, 0.5, WINDOWS)[0]
    assert _mismatch(w, hebb, 0.5, PAIRS, M)


def test_bcm_brian2_matches_torch_in_the_rate_limit_threshold_included():
    """The sliding threshold is a per-cell trace: it moves towards y^2 in Brian2 as in the torch rate limit,
    and the weights follow; a torch run with the threshold frozen misses."""
    rule = BCM(eta=5e-4, tau_theta=2.0, rate_max=100.0)
    pairs = [(0.8, 0.9), (0.8, 0.3), (0.4, 0.6)]
    x, y = _conditions(pairs, M)
    syn = _simulate(rule.brian2_equations(), x, y, 100.0, 0.5, DURATION, seed=5, init={"theta": 0.3})
    w, theta = np.asarray(syn.w[:]), np.asarray(syn.theta[:])

    def update(X, Y, W, s):
        return rule.torch_update(X, Y, W, s["theta"]), {"theta": rule.torch_traces(Y, s["theta"])}

    pred, traces = _iterate(update, x, y, 0.5, WINDOWS, traces={"theta": 0.3})
    assert _mismatch(w, pred, 0.5, pairs, M) == []
    assert _mismatch(theta, traces["theta"], 0.3, pairs, M) == []
    frozen = _iterate(lambda X, Y, W, s: (rule.torch_update(X, Y, W, s["theta"]), {"theta": 0 * s["theta"]}),
                      x, y, 0.5, WINDOWS, traces={"theta": 0.3})[0]
    assert _mismatch(w, frozen, 0.5, pairs, M)


@pytest.mark.parametrize("A_plus,A_minus", [(2e-4, 1e-4), (1e-4, 2e-4)])
def test_stdp_brian2_matches_torch_in_the_rate_limit(A_plus, A_minus):
    """Potentiation- and depression-dominated windows: the drift rate_max (A+ tau+ - A- tau-) x y agrees in
    sign and size; the torch update with the amplitudes swapped misses."""
    rule = STDP(A_plus=A_plus, A_minus=A_minus, rate_max=100.0)
    x, y = _conditions(PAIRS, M)
    w = np.asarray(_simulate(rule.brian2_equations(), x, y, 100.0, 0.5, DURATION, seed=6).w[:])
    assert _mismatch(w, _iterate(_plain(rule), x, y, 0.5, WINDOWS)[0], 0.5, PAIRS, M) == []
    swapped = STDP(A_plus=A_minus, A_minus=A_plus, rate_max=100.0)
    assert _mismatch(w, _iterate(_plain(swapped), x, y, 0.5, WINDOWS)[0], 0.5, PAIRS, M)


# ----------------------------------------------------------------------------- (3) derived contracts
RULES = [KWTAHebbian(), Oja(), BCM(), STDP()]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_derived_contracts_are_checked_local(rule):
    report = check(rule.checkable(3, 2), **KW)
    assert report.local, str(report)


def test_derived_contracts_follow_the_names():
    assert KWTAHebbian().contract.allows == {"pre", "trace", "weight", "neuron_signal"}
    assert KWTAHebbian().contract.pathways == ("KWTA",)
    assert Oja().contract.allows == {"pre", "post", "trace", "weight"}
    assert STDP().contract.allows == {"pre", "post", "trace", "weight"}  # the clip to [0, w_max] reads w
    assert BCM().contract.allows == {"pre", "post", "trace"}  # BCM never names w: no weight


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_planted_reads_of_another_synapse_or_cell_are_non_local(rule):
    """The opposite verdicts under the same derived contract: the update plus another synapse's weight,
    or plus a neighbouring cell's presynaptic activity."""
    ch = rule.checkable(3, 2)
    key_w = "W"
    key_pre = next(k for k, e in ch.spec.entries.items() if type(e).__name__ == "Cells" and e.population == ch.spec.layers[0].pre)

    def other_weight(s):
        return {"W": ch.update(s)["W"] + 0.3 * s[key_w].flip(1)}

    def other_cell(s):
        return {"W": ch.update(s)["W"] + 0.3 * s[key_pre].roll(1, 1).sum(0)[None, :]}

    r = check(Checkable("planted", ch.spec, ch.contracts, other_weight), **KW)
    assert not r.local and "depends on other synapses' weights" in r.kinds, str(r)
    r = check(Checkable("planted", ch.spec, ch.contracts, other_cell), **KW)
    assert not r.local and "depends on other cells of the layer" in r.kinds, str(r)


def test_bcm_reading_its_weight_would_be_non_local_under_its_derived_contract():
    """The derived contract is no wider than the names: BCM does not name w, so a planted w term is caught."""
    ch = BCM().checkable(3, 2)
    r = check(Checkable("BCM + w", ch.spec, ch.contracts, lambda s: {"W": ch.update(s)["W"] - 0.1 * s["W"]}), **KW)
    assert "reads its own weight the contract does not allow" in r.kinds


TRACES = "w : 1\ndapre/dt = -apre / tau_pre : 1 (event-driven)"


def _ns():
    b2 = quiet_brian2()
    return {"eta": 0.01, "rate_max": 100 * b2.Hz, "tau_pre": 20 * b2.ms}


def test_a_plain_local_description_compiles():
    """The baseline for the rejections below: the same description without the foreign name is fine."""
    ok = RuleEquations("ok", TRACES, on_pre="apre += 1", on_post="w += eta * apre / (rate_max * tau_pre)")
    assert str(ok.compile(_ns()).rate_limit["w"]) == "eta*post*pre"


@pytest.mark.parametrize("model,on_post,match", [
    (TRACES, "w += eta * apre * v_post", "'v_post', a variable of another group"),                 # another cell's state
    (TRACES, "w += eta * apre * y_neighbour", r"\['y_neighbour'\] that are neither .* not local"),   # an undeclared cell
    (TRACES + "\nw_total_post = w : 1 (summed)", "w += -eta * w_total_post", "summed variable"),    # other synapses' w
    (TRACES, "w += eta * apre / N_incoming", "'N_incoming'"),                                       # a count of synapses
    (TRACES, "w_other += eta * apre", "writes 'w_other'"),                                          # writes another weight
    (TRACES, "w += eta * apre * i", "'i'"),                                                          # an index
])
def test_descriptions_naming_other_cells_or_synapses_are_rejected(model, on_post, match):
    with pytest.raises(RuleError, match=match):
        RuleEquations("altered", model, on_pre="apre += 1", on_post=on_post).compile(_ns())


def test_unit_errors_name_the_variable():
    b2 = quiet_brian2()
    eqs = STDP.EQUATIONS
    ns = dict(STDP().namespace(), tau_plus=0.02)  # a time constant without its unit
    with pytest.raises(RuleError, match=r"tau_plus has units 1 \(dimensionless\) where s fits"):
        eqs.compile(ns)
    with pytest.raises(RuleError, match="'rate_max'.*Hz"):
        eqs.compile(dict(STDP().namespace(), rate_max=100.0))
    bad_trace = RuleEquations("bad", "w : 1\ndapre/dt = -apre / tau_pre : second (event-driven)", on_pre="apre += 1",
                              on_post="w += eta * apre / (rate_max * tau_pre)")
    with pytest.raises(RuleError, match="apre"):
        bad_trace.compile(_ns())
    assert STDP.EQUATIONS.compile(STDP().namespace()).values["tau_plus"] == pytest.approx(0.02)  # with units: fine
    assert b2.ms  # brian2 loaded


def test_unsupported_syntax_is_a_clear_error():
    with pytest.raises(RuleError, match="not linear in the trace 'apre'"):
        RuleEquations("sq", TRACES, on_pre="apre += 1", on_post="w += eta * apre**2").compile(_ns())
    with pytest.raises(RuleError, match="only be raised or lowered by a constant"):
        RuleEquations("nn", TRACES, on_pre="apre = 1", on_post="w += eta * apre").compile(_ns())
    with pytest.raises(RuleError, match="event-driven"):
        RuleEquations("cd", "w : 1\ndapre/dt = -apre / tau_pre : 1 (clock-driven)", on_pre="apre += 1")
    with pytest.raises(RuleError, match="'w : 1'"):
        RuleEquations("now", "dapre/dt = -apre / tau_pre : 1 (event-driven)", on_pre="apre += 1")
    with pytest.raises(RuleError, match="not a statement"):
        RuleEquations("st", TRACES, on_pre="apre + 1")
    with pytest.raises(RuleError, match="Brian2 reads e, pi, inf as constants"):
        RuleEquations("e", TRACES, on_post="w += e * apre", signals={"e": "feedback"})


def test_signals_and_scalars_give_pathways_and_global_scalars():
    """A reward-modulated Hebbian rule with an error signal: the contract names the pathway and the global
    scalar, the checker finds it local, Brian2 reads the signal from the post group and the reward as a
    shared synaptic variable; the opposite: the same rule under a contract without the scalar is non-local."""
    eqs = RuleEquations("modulated", TRACES, on_pre="apre += 1",
                        on_post="w += eta * R * err * apre / (rate_max * tau_pre)", signals={"err": "feedback"},
                        scalars=("R",))
    c = eqs.compile(_ns())
    assert str(c.rate_limit["w"]) == "R*err*eta*post*pre"
    assert c.contract.allows == {"pre", "post", "trace", "neuron_signal", "global_scalar"}
    assert c.contract.pathways == ("feedback",)
    b = c.brian2()
    assert "R : 1 (shared)" in b["model"] and "err_post" in b["on_post"]
    assert b["namespace"]["tau_pre"] == 20 * quiet_brian2().ms and b["namespace"]["eta"] == 0.01  # units kept
    assert check(c.checkable(3, 2), **KW).local
    ch = c.checkable(3, 2)
    narrow = Contract("no scalar", allows={"pre", "post", "trace", "neuron_signal"}, pathways=("feedback",))
    r = check(Checkable("narrow", ch.spec, {"W": narrow}, ch.update), **KW)
    assert "reads a global scalar the contract does not allow" in r.kinds
    x, y, W, e = _draw(0, 3, 3, 2)
    assert torch.allclose(c.torch_update(x, y, W, err=e, R=torch.tensor([1.0, -2.0, 0.5], dtype=D64)),
                          0.01 * sum(r_ * torch.outer(y[b_] * e[b_], x[b_]) for b_, r_ in enumerate([1.0, -2.0, 0.5])))


def test_torch_inputs_are_checked():
    with pytest.raises(RuleError, match="pre must be a \\(batch, 3\\) tensor"):
        Oja().torch_update(torch.rand(2, 4), torch.rand(2, 2), torch.rand(2, 3))
    with pytest.raises(RuleError, match="theta"):
        BCM().compiled.torch_update(torch.rand(2, 3), torch.rand(2, 2), torch.rand(2, 3))
    with pytest.raises(RuleError, match="unknown inputs"):
        Oja().torch_update(torch.rand(2, 3), torch.rand(2, 2), torch.rand(2, 3), reward=1.0)
    assert Oja().torch_update(torch.rand(2, 3), torch.rand(2, 2), torch.rand(2, 3)).shape == (2, 3)


def test_bounds_apply_to_brian2_and_torch():
    s = STDP(w_max=0.7)
    assert torch.equal(s.compiled.bound(torch.tensor([-0.2, 0.3, 0.9])), torch.tensor([0.0, 0.3, 0.7]))
    assert torch.equal(Oja().compiled.bound(torch.tensor([-5.0, 5.0])), torch.tensor([-5.0, 5.0]))  # no bounds
