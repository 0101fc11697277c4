"""Behaviours every simulator must show (rate, snnTorch, Brian2), as pytest_nengo runs one suite on
every backend: the common interface, convergence to the rate output with simulated time, the k
winners, errors that name the parameter; and snnTorch vs Brian2 on the same network and input."""

import numpy as np
import pytest
import torch

from neurolearn.circuits.kwta import kwta
from neurolearn.networks import MLP
from neurolearn.sim.brian2_sim import Brian2Network
from neurolearn.sim.simulators import SIMULATORS, SimRun, simulator
from neurolearn.sim.snntorch_sim import SnnTorchNetwork

N_IN, N_OUT = 16, 10


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = MLP((N_IN, N_OUT), seed=1, init_gain=3.0)
    with torch.no_grad():
        n.layers[0].bias.fill_(0.15)
    return n


@pytest.fixture(scope="module")
def x():
    return torch.rand(40, N_IN, generator=torch.Generator().manual_seed(2))


@pytest.fixture(params=sorted(SIMULATORS))
def name(request):
    return request.param


def test_common_interface_and_run_info(name, net, x):
    sim = simulator(name, net)
    out = sim.run(x, duration=0.1, record=(0.02, 0.1))
    run = sim.last_run
    assert isinstance(run, SimRun) and out.shape == (40, N_OUT) and torch.equal(run.rates, out)
    assert [t for t, _ in run.checkpoints] == [0.02, 0.1] and torch.equal(run.checkpoints[-1][1], out)
    assert "clamp(W x + b, 0, 1)" in sim.describes
    if name == "rate":
        assert run.counts is None and run.spikes_per_inference == 0
    else:  # every input and output spike counted: output counts = rates x 100 steps
        assert torch.allclose(run.counts, out * 100) and run.output_spikes_per_inference == pytest.approx(run.counts.sum(1).mean().item())
        assert run.spikes_per_inference > run.output_spikes_per_inference + 0.5 * 100 * x.sum(1).mean().item()
        assert run.examples_per_second > 0


def test_output_converges_to_the_rate_output(name, net, x):
    """Mean |rate estimate - clamp(W x + b, 0, 1)| falls with simulated time (Poisson noise ~ 1/sqrt(T))."""
    y = net(x).detach()
    sim = simulator(name, net)
    sim.run(x, duration=0.4, record=(0.01, 0.05, 0.4))
    errors = [(r - y).abs().mean().item() for _, r in sim.last_run.checkpoints]
    if name == "rate":
        assert errors == [0.0, 0.0, 0.0]
    else:
        assert errors[0] > errors[1] > errors[2] and errors[2] < 0.025, errors


def test_k_winners_follow_the_rate_top_k(name, net):
    """Winners read out of each simulator's rates: exactly k per input; with a clear margin (k-th and
    (k+1)-th of y - H >= 0.15 apart) they are the rate top-k in >= 90% of those inputs."""
    x = torch.rand(150, N_IN, generator=torch.Generator().manual_seed(5))
    y = net(x).detach()
    H = torch.linspace(-0.05, 0.05, N_OUT)
    sim = simulator(name, net, k=3, thresholds=H)
    sim.run(x, duration=0.3)
    w = sim.last_run.winners
    assert torch.equal(w.sum(1), torch.full((150,), 3.0))
    top = torch.sort(y - H, 1, descending=True).values
    clear = (top[:, 2] - top[:, 3]) >= 0.15
    assert clear.sum() >= 20
    agree = (w == kwta(y, 3, H)).all(1)[clear].double().mean().item()
    assert agree >= 0.9, agree


def test_bad_input_names_the_parameter(name, net):
    sim = simulator(name, net)
    with pytest.raises(ValueError, match=rf"x must have shape \(N, {N_IN}\)"):
        sim.run(torch.zeros(3, N_IN + 1))
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
        sim.run(torch.full((3, N_IN), -0.1))
    with pytest.raises(ValueError, match="without NaN"):
        sim.run(torch.full((3, N_IN), float("nan")))
    with pytest.raises(ValueError, match="k must be an integer in"):
        simulator(name, net, k=N_OUT + 1)
    if name != "rate":
        with pytest.raises(ValueError, match="duration"):
            sim.run(torch.zeros(3, N_IN), duration=1e-4)
        with pytest.raises(ValueError, match="record"):
            sim.run(torch.zeros(3, N_IN), duration=0.05, record=(0.1,))


def test_snntorch_and_brian2_spike_counts_agree():
    """Same converted layer, same input. A constant drive (bias, no input spikes) is deterministic:
    the counts agree within 1 spike (float32 vs float64 at a threshold crossing). Poisson input
    (independent streams): mean |rate difference| < 0.03 over 300 steps, correlation > 0.97."""
    b = np.array([0.0, 0.07, 0.13, 0.37, 0.5, 0.71, 0.99, 1.2, -0.3])
    W = np.zeros((len(b), 4))
    zero = np.zeros((2, 4))
    c_b2 = Brian2Network(W, b, copies=2).run(zero, 300)
    c_st = SnnTorchNetwork([torch.tensor(W, dtype=torch.float32)], [torch.tensor(b, dtype=torch.float32)]).run(
        torch.zeros(2, 4), 300)["counts"][0].numpy()
    assert np.abs(c_b2 - c_st).max() <= 1, (c_b2, c_st)
    assert np.abs(c_st[0] - np.clip(b, 0, 1) * 300).max() <= 1 + 1e-9  # count = floor(b T) for 0 <= b <= 1
    g = torch.Generator().manual_seed(4)
    W, bias, x = torch.randn(8, 12, generator=g) * 0.4, torch.full((8,), 0.1), torch.rand(30, 12, generator=g)
    r_b2 = Brian2Network(W.numpy(), bias.numpy()).run(x.numpy(), 300) / 300
    r_st = SnnTorchNetwork([W], [bias]).run(x, 300)["counts"][0].numpy() / 300
    assert np.abs(r_b2 - r_st).mean() < 0.03
    assert np.corrcoef(r_b2.ravel(), r_st.ravel())[0, 1] > 0.97
