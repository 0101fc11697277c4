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
