"""One behavioural suite on every simulator (rate, snnTorch, Brian2), as pytest_nengo does for backends."""

import numpy as np
import pytest
import torch

from neurolearn.networks import MLP
from neurolearn.sim.brian2_sim import Brian2Network
from neurolearn.sim.simulators import SIMULATORS, simulator


@pytest.fixture(scope="module")
def small_net():
    net = MLP((10, 12), seed=3, init_gain=2.0)
    with torch.no_grad():
        net.layers[0].bias.fill_(0.2)
    return net


@pytest.fixture(params=sorted(SIMULATORS))
def sim(request, small_net):
    kw = {} if request.param == "rate" else {"steps": 400}
    return simulator(request.param, small_net, **kw)


def test_every_simulator_gives_the_rate_output(sim, small_net):
    """Each simulator's output estimates clamp(W x + b, 0, 1) within 0.03 on average."""
    x = torch.rand(30, 10, generator=torch.Generator().manual_seed(0))
    layer = small_net.layers[0]
    y = (x @ layer.weight.T + layer.bias).clamp(0, 1).detach()  # the equation, not the network's own forward
    out = sim.run(x)
    assert out.shape == y.shape
    assert (out - y).abs().mean().item() < 0.03, sim.name


@pytest.mark.parametrize("name", ["snntorch", "brian2"])
def test_spiking_simulators_converge_to_the_rate_output(name, small_net):
    """The spike-rate estimate of the graded outputs (0 < y < 1) gets closer to the rate output as the
    simulated time grows (25 -> 100 -> 800 steps), in each spiking simulator, at the 1/sqrt(T) pace of
    rate-coded (Bernoulli) input."""
    x = torch.rand(20, 10, generator=torch.Generator().manual_seed(4))
    y = small_net(x).detach()
    inside = (y > 0) & (y < 1)
    assert inside.sum() >= 40  # 24% of the 240 outputs are graded
    errors = [(simulator(name, small_net, steps=s).run(x) - y).abs()[inside].mean().item() for s in (25, 100, 800)]
    # rate-coded input: the estimate's noise falls as 1/sqrt(T), about 5.7x from 25 to 800 steps
    assert errors[0] > errors[1] > errors[2] and errors[2] < errors[0] / 4 and errors[2] < 0.03, errors


def test_every_simulator_is_deterministic_under_seed(sim):
    x = torch.rand(5, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sim.run(x), sim.run(x))


def test_unknown_simulator_is_named():
    with pytest.raises(ValueError, match="simulator must be one of"):
        simulator("nest", MLP((2, 2)))


def test_brian2_objects_are_reachable_and_take_user_monitors(small_net):
    """The Brian2 objects exist before the first run; monitors added before and after a run record,
    and adding them does not change the spike counts."""
    from neurolearn.sim.brian2_sim import quiet_brian2

    b2 = quiet_brian2()
    s = simulator("brian2", small_net, steps=20, copies=2)
    assert {"network", "input", "output", "synapses", "spikes"} <= set(s.objects)
    x = torch.rand(2, 10, generator=torch.Generator().manual_seed(2))
    first = s.run(x)
    v = b2.StateMonitor(s.objects["output"], "v", record=[0, 1])
    s.objects["network"].add(v)
    assert torch.equal(s.run(x), first)
    rate = b2.PopulationRateMonitor(s.objects["output"])
    s.objects["network"].add(rate)
    assert torch.equal(s.run(x), first)
    assert v.v.shape == (2, 40) and len(rate.rate) == 20


def test_brian2_kwta_population_picks_the_top_k_with_a_margin():
    """The converted network's competition in Brian2 (Poisson input, inhibitory cell, thresholds H):
    on 100 random inputs whose k-th and (k+1)-th drives ``W x + b - H`` differ by at least 0.1, the
    cells that fire are the rate top-k in >= 95% of inputs. Opposite verdicts: without inhibition many
    more cells fire, and ignoring H the winners are not the top-k of the drive minus H."""
    rng = np.random.default_rng(0)
    n_out, n_in, k = 12, 16, 3
    W, b, H = rng.normal(0, 0.4, (n_out, n_in)), np.full(n_out, 0.1), rng.normal(0, 0.1, n_out)
    xs = []
    while len(xs) < 100:
        x = rng.random(n_in)
        s = np.sort(W @ x + b - H)[::-1]
        if s[k - 1] - s[k] >= 0.1 and s[k - 1] > 0.3:
            xs.append(x)
    x = np.array(xs)
    ref = np.zeros((100, n_out), dtype=bool)
    np.put_along_axis(ref, np.argsort(-(x @ W.T + b - H), 1)[:, :k], True, 1)
    net = Brian2Network(W, b, copies=100, kwta_k=k, thresholds=H, kwta_gain=0.004)
    winners = net.run(x, 2000) > 0
    assert (winners == ref).all(1).mean() >= 0.95
    no_h = Brian2Network(W, b, copies=100, kwta_k=k, kwta_gain=0.004).run(x, 2000) > 0
    assert (no_h == ref).all(1).mean() < 0.9
    free = Brian2Network(W, b, copies=100).run(x, 300) > 0
    assert (free == ref).all(1).mean() < 0.5
    with pytest.raises(ValueError, match="kwta_k"):
        Brian2Network(W, np.zeros(n_out), kwta_k=0)
