"""Spiking simulation pinned to physics no one here wrote, and the rate-vs-spiking comparison.

One behavioural test runs on every spiking simulator (as Nengo's pytest_nengo does for backends):
a LIF cell driven by a constant current fires at the analytic rate 1/(t_ref + tau ln(RI/(RI - V_th))).
"""

import numpy as np
import pytest
import torch

from neurolearn.data import load_digits
from neurolearn.networks import MLP
from neurolearn.sim import LIFParams, lif_rate, to_spiking
from neurolearn.sim.brian2_sim import lif_spike_counts_brian2
from neurolearn.sim.compare import compare_network, topk_agreement
from neurolearn.sim.snntorch_sim import lif_spike_counts

CURRENTS = [2.1e-10, 2.5e-10, 4e-10, 1e-9]  # from just above threshold (R I = 21 mV vs 20 mV) to 154 Hz
DURATION = 2.0


def _snntorch(currents, params, duration):
    return lif_spike_counts(torch.tensor(currents), params, duration).numpy()


def _brian2(currents, params, duration):
    return lif_spike_counts_brian2(currents, params, duration, target="numpy")


SIMULATORS = {"snntorch": _snntorch, "brian2": _brian2}


@pytest.fixture(params=sorted(SIMULATORS))
def simulator(request):
    return SIMULATORS[request.param]


@pytest.mark.parametrize("t_ref", [2e-3, 5e-3])
def test_lif_fires_at_the_analytic_rate(simulator, t_ref):
    p = LIFParams(t_ref=t_ref)
    rates = simulator(CURRENTS, p, DURATION) / DURATION
    expected = np.array([lif_rate(i, p) for i in CURRENTS])
    assert np.all(np.abs(rates - expected) <= 0.05 * expected), (rates, expected)


def test_lif_below_threshold_is_silent(simulator):
    assert simulator([1e-10, 1.9e-10], LIFParams(), 0.5).sum() == 0


def test_analytic_rate_check_can_fail():
    """Ignoring the refractory period (simulating t_ref = 0) misses the analytic rate by far more than 5%."""
    rates = _snntorch(CURRENTS, LIFParams(t_ref=0.0), DURATION) / DURATION
    expected = np.array([lif_rate(i, LIFParams(t_ref=2e-3)) for i in CURRENTS])
    assert np.abs(rates[-1] - expected[-1]) > 0.05 * expected[-1]


def test_snntorch_and_brian2_agree_on_a_population():
    """Same cells, same currents: spike counts within 2 spikes or 3% (spike times are quantised to dt)."""
    currents = np.linspace(2.05e-10, 1.2e-9, 12)
    a = _snntorch(list(currents), LIFParams(), 1.0)
    b = _brian2(list(currents), LIFParams(), 1.0)
    assert np.all(np.abs(a - b) <= np.maximum(2, 0.03 * b)), (a, b)


def _trained_digits_net(seed=0):
    from neurolearn.credit import Backprop
    from neurolearn.objectives import SelfDefinedTarget
    from neurolearn.train import Trainer

    ds = load_digits()
    net = MLP((64, 200), dropout=(0.2, 0.2), seed=seed)
    obj = SelfDefinedTarget(k=5, gamma=0.4)
    tr = Trainer(net, obj, Backprop(), {"epochs": 15, "batch_size": 16, "lr": 8.0, "optimizer": "sgd",
                                        "schedule": "linear", "final_lr_factor": 5e-4, "block": 8},
                 seed=seed, progress=False)
    tr.fit(ds.x_train)
    return net, ds, tr.state


def test_spiking_output_converges_to_rate_output():
    net, ds, _ = _trained_digits_net()
    model = to_spiking(net)
    x = ds.x_test[:100]
    y = net(x).detach()
    errors = [(model.rates(x, steps) - y).abs().mean().item() for steps in (10, 50, 400)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_spiking_accuracy_close_to_rate_on_digits(tmp_path):
    """Issue targets on the digits test split: snnTorch within 2 points of the rate accuracy, Brian2
    within 3 (200 steps)."""
    net, ds, state = _trained_digits_net()
    res = compare_network(net, lambda x: net(x), ds, 5, state.H, tmp_path, steps=200, brian2=True)
    assert abs(res["snntorch"]["direct_av"] - res["rate"]["direct_av"]) <= 0.02, res
    assert abs(res["brian2"]["direct_av"] - res["rate"]["direct_av"]) <= 0.03, res
    # the circuit's report: the inhibition stops the race at about k cells, most of them the rate winners
    assert res["brian2_kwta"]["overlap"] > 0.8 and 5 <= res["brian2_kwta"]["winners_per_input"] <= 6
    assert res["correlation"] > 0.95
    assert (tmp_path / "accuracy_vs_time.png").exists() and (tmp_path / "compare.json").exists()
    accs = [a for _, a in res["accuracy_vs_steps"]]
    assert accs[-1] >= accs[0]


def test_topk_agreement_counts_sets():
    r = torch.tensor([[0.9, 0.8, 0.1, 0.0]])
    assert topk_agreement(r, torch.tensor([[0.8, 0.9, 0.0, 0.1]]), 2)["equal"] == 1.0
    assert topk_agreement(r, torch.tensor([[0.9, 0.0, 0.8, 0.1]]), 2) == {"equal": 0.0, "overlap": 0.5}


def test_relu_conversion_needs_calibration_and_normalises():
    net = MLP((8, 6, 4), hidden_activation="relu", seed=0)
    with pytest.raises(ValueError, match="calibration_x"):
        to_spiking(net)
    x = torch.rand(200, 8)
    model = to_spiking(net, calibration_x=x)
    assert model.scales[0] == 1.0 and model.scales[1] > 0 and model.scales[2] == 1.0
    with pytest.raises(ValueError, match="simulator"):
        to_spiking(net, simulator="nest")


def test_brian2_network_estimates_the_rate_output_like_snntorch():
    """The same converted layer in Brian2 and snnTorch: both spike rates estimate clamp(Wx+b, 0, 1)."""
    from neurolearn.sim.brian2_sim import Brian2Network
    from neurolearn.sim.snntorch_sim import SnnTorchNetwork

    g = torch.Generator().manual_seed(0)
    W, b, x = torch.randn(6, 10, generator=g) * 0.3, torch.full((6,), 0.1), torch.rand(30, 10, generator=g)
    y = (x @ W.T + b).clamp(0, 1).numpy()
    inside = (y > 0) & (y < 1)  # judged where the output is graded (clamped cells are trivially exact)
    assert inside.mean() > 0.4
    b2 = Brian2Network(W.numpy(), b.numpy(), copies=15).run(x.numpy(), 400) / 400
    st = SnnTorchNetwork([W], [b]).run(x, 400)["counts"][0].numpy() / 400
    assert np.abs(b2 - y)[inside].mean() < 0.02 and np.abs(st - y)[inside].mean() < 0.02
    assert np.abs(b2 - st)[inside].mean() < 0.03
    # the tolerance separates: the same layer with every bias 0.05 higher is told apart
    shifted = Brian2Network(W.numpy(), b.numpy() + 0.05, copies=15).run(x.numpy(), 400) / 400
    assert np.abs(shifted - st)[inside].mean() > 0.03
    with pytest.raises(ValueError, match="weight must be"):
        Brian2Network(W.numpy(), np.zeros(3))
    with pytest.raises(ValueError, match="target"):
        Brian2Network(W.numpy(), b.numpy(), target="gpu")


def test_brian2_conversion_is_one_layer_only():
    with pytest.raises(ValueError, match="one-layer"):
        to_spiking(MLP((8, 6, 4), hidden_activation="relu", seed=0), "brian2", calibration_x=torch.rand(20, 8))
    with pytest.raises(ValueError, match="equilibrium propagation"):
        to_spiking(MLP((8, 6, 4), hidden_activation="hardsigmoid", seed=0))


def test_leaky_converted_cells_in_both_simulators():
    """Converted cells with a membrane leak (tau_m = 20 steps, beta = exp(-1/20)) and constant drives b
    (no input): a cell is silent below the rheobase b < 1 - beta (the steady state b / (1 - beta) never
    reaches threshold 1) where the integrate-and-fire cell fires at rate b; above it both simulators
    fire alike, never more than the integrate-and-fire cells."""
    from neurolearn.sim.brian2_sim import Brian2Network
    from neurolearn.sim.snntorch_sim import SnnTorchNetwork

    tau, steps = 20.0, 400
    b = torch.linspace(0.01, 0.5, 12)
    W, x = torch.zeros(12, 3), torch.zeros(1, 3)
    leaky = SnnTorchNetwork([W], [b], tau_m=tau).run(x, steps)["counts"][0][0].numpy()
    brian = Brian2Network(W.numpy(), b.numpy(), copies=1, tau_m=tau).run(x.numpy(), steps)[0]
    plain = SnnTorchNetwork([W], [b]).run(x, steps)["counts"][0][0].numpy()
    below = (b < 1 - np.exp(-1 / tau)).numpy()
    assert below.any() and (~below).any()
    assert (leaky[below] == 0).all() and (plain[below] > 0).all() and (leaky[~below] > 0).all()
    assert (leaky <= plain).all() and (leaky < plain).any()
    assert np.abs(leaky - brian).max() <= 1, (leaky, brian)
    with pytest.raises(ValueError, match="tau_m"):
        SnnTorchNetwork([W], [b], tau_m=0)


# --- parameters that are physical nonsense: refused alike by both simulators, before any simulation ---


@pytest.fixture
def no_simulation(monkeypatch):
    """Any simulation step (a Brian2 run of non-zero duration, an snnTorch cell step) fails the test: the
    checks must refuse the parameters before that (Brian2's zero-duration unit check is allowed)."""
    import brian2
    import snntorch

    real_run = brian2.Network.run

    def run(self, duration, *a, **kw):
        if float(duration) > 0:
            raise AssertionError("simulated before the parameters were checked")
        return real_run(self, duration, *a, **kw)

    def step(self, *a, **kw):
        raise AssertionError("simulated before the parameters were checked")

    monkeypatch.setattr(brian2.Network, "run", run)
    monkeypatch.setattr(snntorch.Leaky, "forward", step)


def _converted(simulator, W, b, tau_m=None):
    """The same converted layer in snnTorch or Brian2: ``run(x, steps)`` -> counts (numpy)."""
    from neurolearn.sim.brian2_sim import Brian2Network
    from neurolearn.sim.snntorch_sim import SnnTorchNetwork

    if simulator == "brian2":
        net = Brian2Network(np.asarray(W), np.asarray(b), copies=2, tau_m=tau_m)
        return lambda x, steps: net.run(np.asarray(x), steps)
    net = SnnTorchNetwork([torch.as_tensor(W, dtype=torch.float32)], [torch.as_tensor(b, dtype=torch.float32)], tau_m=tau_m)
    return lambda x, steps: net.run(torch.as_tensor(x, dtype=torch.float32), steps)["counts"][0].numpy()


SPIKING = ["snntorch", "brian2"]
W3, B3, X3 = np.full((2, 3), 0.2), np.array([0.1, 0.3]), np.full((2, 3), 0.5)


@pytest.mark.parametrize("simulator", SPIKING)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_biases_inputs_are_refused_naming_which(simulator, bad, no_simulation):
    """A NaN weight used to give finite spike rates; now each is refused, naming the array."""
    W, b, x = W3.copy(), B3.copy(), X3.copy()
    W[1, 2] = bad
    with pytest.raises(ValueError, match=r"weight.* must be finite"):
        _converted(simulator, W, B3)
    b[0] = bad
    with pytest.raises(ValueError, match=r"bias.* must be finite"):
        _converted(simulator, W3, b)
    x[0, 1] = bad
    run = _converted(simulator, W3, B3)
    with pytest.raises(ValueError, match=r"x must be finite"):
        run(x, 10)


def test_non_finite_network_and_currents_are_refused(no_simulation):
    net = MLP((3, 2), seed=0)
    with torch.no_grad():
        net.layers[0].weight[0, 0] = float("nan")
    for simulator in SPIKING:
        with pytest.raises(ValueError, match=r"layers\[0\].weight must be finite"):
            to_spiking(net, simulator)
    model = to_spiking(MLP((3, 2), seed=0))
    with pytest.raises(ValueError, match="x must be finite"):
        model.rates(torch.tensor([[0.1, float("nan"), 0.2]]), 10)
    for fn in (_snntorch, _brian2):
        with pytest.raises(ValueError, match="currents must be finite"):
            fn([2.5e-10, float("nan")], LIFParams(), 0.1)


@pytest.mark.parametrize("counts", [lif_spike_counts, lif_spike_counts_brian2], ids=SPIKING)
def test_time_step_not_below_tau_is_refused_naming_both(counts, no_simulation):
    """dt > tau used to give a fixed spike count whatever the current; now refused with both values."""
    currents = torch.tensor(CURRENTS) if counts is lif_spike_counts else CURRENTS
    with pytest.raises(ValueError, match=r"dt = 0.001 s >= tau = 0.0005 s"):
        counts(currents, LIFParams(tau=0.5e-3), 0.1, dt=1e-3)
    with pytest.raises(ValueError, match=r"dt = 0.0001 s >= tau = 0.0001 s"):
        counts(currents, LIFParams(tau=1e-4), 0.1)


@pytest.mark.parametrize("simulator", SPIKING)
@pytest.mark.parametrize("tau_m", [0.5, 1.0])
def test_membrane_time_constant_of_one_step_or_less_is_refused(simulator, tau_m, no_simulation):
    """tau_m = 0.5 steps made snnTorch and Brian2 disagree; now both refuse it (and 1 step)."""
    with pytest.raises(ValueError, match=rf"one time step = 1 steps >= tau_m = {tau_m:g} steps"):
        _converted(simulator, W3, B3, tau_m=tau_m)
    with pytest.raises(ValueError, match="tau_m"):
        to_spiking(MLP((3, 2), seed=0), simulator, tau_m=tau_m)


@pytest.mark.parametrize("simulator", SPIKING)
def test_zero_steps_are_refused(simulator, no_simulation):
    """Brian2 with 0 steps used to return NaN rates (0 / 0); now both simulators refuse it."""
    run = _converted(simulator, W3, B3)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            run(X3, steps)
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            to_spiking(MLP((3, 2), seed=0), simulator).rates(torch.as_tensor(X3, dtype=torch.float32), steps)
    for fn in (lif_spike_counts, lif_spike_counts_brian2):  # a duration shorter than one step is 0 steps
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            fn(torch.tensor(CURRENTS) if fn is lif_spike_counts else CURRENTS, LIFParams(), 0.4e-4, dt=1e-4)


@pytest.mark.parametrize("simulator", SPIKING)
def test_legal_spiking_parameters_pass_in_both_simulators(simulator):
    """The opposite verdicts: finite values, tau_m just above one step, one step, dt just below tau run
    and give finite spike counts."""
    counts = _converted(simulator, W3, B3, tau_m=1.5)(X3, 1)
    assert counts.shape == (2, 2) and np.isfinite(counts).all()
    counts = _converted(simulator, W3, B3)(X3, 50)
    assert np.isfinite(counts).all() and counts.sum() > 0
    rates = to_spiking(MLP((3, 2), seed=0), simulator).rates(torch.as_tensor(X3, dtype=torch.float32), 1)
    assert torch.isfinite(rates).all()
    fn = _snntorch if simulator == "snntorch" else _brian2
    assert np.isfinite(fn(CURRENTS, LIFParams(tau=1.01e-4), 0.01)).all()


def test_compare_says_when_brian2_is_skipped():
    """spiking='both' on a two-layer network used to skip Brian2 silently: compare_network now warns and
    records why; on a one-layer network Brian2 runs (the opposite case). Negative limits are refused."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 6, generator=g), torch.arange(40) % 2
    ds = SimpleNamespace(x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:], n_classes=2)
    deep = MLP((6, 5, 4), hidden_activation="relu", seed=0)
    with pytest.warns(UserWarning, match="Brian2 skipped.*2 layers"):
        res = compare_network(deep, lambda v: deep(v), ds, 2, None, steps=20, brian2=True)
    assert "brian2" not in res and "2 layers" in res["brian2_skipped"]
    shallow = MLP((6, 4), seed=0)
    res = compare_network(shallow, lambda v: shallow(v), ds, 2, None, steps=20, brian2=True)
    assert "brian2" in res and "brian2_skipped" not in res
    with pytest.raises(ValueError, match="test_limit"):
        compare_network(shallow, lambda v: shallow(v), ds, 2, None, steps=20, test_limit=-1)
