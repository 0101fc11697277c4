"""Learning in Brian2: the kWTA Hebbian rule's synaptic equations agree with its torch update in the
rate limit, and the network learns the digits inside one Brian2 run (no Python weight steps)."""

import numpy as np
import pytest
import torch

from neurolearn.data import load_digits
from neurolearn.eval.association import direct_association_accuracy
from neurolearn.plasticity.hebbian_kwta import KWTAHebbian
from neurolearn.sim.brian2_learning import Brian2KWTALearner
from neurolearn.sim.brian2_sim import quiet_brian2


def test_synaptic_equations_match_torch_update_in_the_rate_limit():
    """Poisson pre cells at x * rate_max, post cells firing at 20 Hz, eta small: the weight change
    accumulated by the Brian2 equations equals KWTAHebbian.torch_update applied once per post spike
    (w <- w + torch_update(x, 1, w)) within 10%."""
    b2 = quiet_brian2()
    b2.prefs.codegen.target = "numpy"
    b2.start_scope()
    b2.seed(1)
    rule = KWTAHebbian(eta=0.002)
    n = 200
    x = np.where(np.arange(n) < n // 2, 0.2, 0.8)
    ns = {"tau_pre": 20 * b2.ms, "rate_max": 200 * b2.Hz, "eta_s": rule.eta, "w_max": 1.0, "w_gain": 0.0}
    pre = b2.PoissonGroup(n, rates=x * 200 * b2.Hz)
    post = b2.NeuronGroup(n, "v : 1", threshold="rand() < 20*Hz*dt", namespace=ns)
    eqs = rule.brian2_equations()
    syn = b2.Synapses(pre, post, eqs["model"], on_pre=eqs["on_pre"], on_post=eqs["on_post"], namespace=ns,
                      method="exact")
    syn.connect(j="i")
    syn.w = 0.5
    mon = b2.SpikeMonitor(post)
    net = b2.Network(pre, post, syn, mon)
    net.run(10 * b2.second)
    dw = np.asarray(syn.w[:]) - 0.5
    counts = np.asarray(mon.count[:], dtype=float)
    expected = []
    for xi, c in zip(x, counts):
        w = torch.tensor([[0.5]], dtype=torch.float64)
        for _ in range(int(c)):
            w = w + rule.torch_update(torch.tensor([[xi]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), w)
        expected.append(w.item() - 0.5)
    expected = np.array(expected)
    for group in (x == 0.2, x == 0.8):
        assert abs(dw[group].mean() - expected[group].mean()) <= 0.1 * abs(expected[group].mean()), (dw[group].mean(), expected[group].mean())
    assert np.sign(dw[x == 0.2].mean()) == -1 and np.sign(dw[x == 0.8].mean()) == 1  # toward x from 0.5


def test_learner_parameters_are_validated():
    for kw, name in (({"tau_m": 0}, "tau_m"), ({"rate_max": -1}, "rate_max"), ({"t_rest": -0.01}, "t_rest")):
        with pytest.raises(ValueError, match=name):
            Brian2KWTALearner(4, 3, target="numpy", **kw)


def test_rule_parameters_are_validated():
    with pytest.raises(ValueError, match="eta"):
        KWTAHebbian(eta=0)
    with pytest.raises(ValueError, match="k"):
        KWTAHebbian(k=0)


def test_brian2_network_learns_digits_without_python_weight_steps():
    """150 digits presented once in one Brian2 run: direct association above the untrained network
    by at least 10 points, and the adaptive thresholds rose (homeostasis active)."""
    ds = load_digits()
    x, y = ds.x_train[:150].numpy(), ds.y_train[:150]
    xt, yt = ds.x_test[:150].numpy(), ds.y_test[:150]
    learner = Brian2KWTALearner(64, 30, KWTAHebbian(eta=0.1, theta_plus=0.2), target="numpy", seed=0)
    before = direct_association_accuracy(torch.tensor(learner.responses(x)), y, torch.tensor(learner.responses(xt)), yt, 10)
    w0 = learner.weights.copy()
    runs, writes = [], []
    real_run = learner.net.run
    learner.net.run = lambda *a, **kw: (runs.append(a), real_run(*a, **kw))[1]
    real_setattr = type(learner.S).__setattr__

    class Watched(type(learner.S)):  # any assignment to the synapses' variables from Python is recorded
        def __setattr__(self, name, value):
            if name in ("w", "pre_trace", "apre"):
                writes.append(name)
            real_setattr(self, name, value)

    learner.S.__class__ = Watched
    learner.train(x)
    assert len(runs) == 1 and writes == []  # the whole training set in one Brian2 run, no weight step in Python
    learner.S.w = learner.S.w[:]  # and a weight written from Python would have been seen
    assert writes == ["w"]
    learner.S.__class__ = Watched.__mro__[1]
    learner.net.run = real_run
    after = direct_association_accuracy(torch.tensor(learner.responses(x)), y, torch.tensor(learner.responses(xt)), yt, 10)
    assert after["av"] >= before["av"] + 0.10, (before, after)
    assert not np.allclose(learner.weights, w0)
    assert np.asarray(learner.E.theta[:]).max() > 0
