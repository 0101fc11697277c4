"""Learning in Brian2: the kWTA Hebbian rule's synaptic equations agree with its torch update in the
rate limit, every rule parameter reaches the Brian2 learner, the weights move exactly as the rule's
on_post equation says from the recorded spikes (and only then), and the network learns the digits
inside one Brian2 run."""

import numpy as np
import pytest
import torch

from neurolearn.data import load_digits
from neurolearn.eval.association import direct_association_accuracy
from neurolearn.plasticity.hebbian_kwta import KWTAHebbian
from neurolearn.sim.brian2_learning import Brian2KWTALearner
from neurolearn.sim.brian2_sim import quiet_brian2


@pytest.mark.parametrize("c", [1.0, 1.5])
def test_synaptic_equations_match_torch_update_in_the_rate_limit(c):
    """Poisson pre cells at x * rate_max, post cells firing at 20 Hz, eta small: the weight change
    accumulated by the rule's Brian2 equations (used unchanged, with their namespace) equals
    KWTAHebbian.torch_update applied once per post spike (w <- w + torch_update(x, 1, w)) within 10%."""
    b2 = quiet_brian2()
    b2.prefs.codegen.target = "numpy"
    b2.start_scope()
    b2.seed(1)
    rule = KWTAHebbian(eta=0.002, c=c)
    n = 200
    x = np.where(np.arange(n) < n // 2, 0.2, 0.8)
    eqs = rule.brian2_equations(rate_max=200.0, tau_pre=0.02)
    pre = b2.PoissonGroup(n, rates=x * 200 * b2.Hz)
    post = b2.NeuronGroup(n, "v : 1", threshold="rand() < 20*Hz*dt")
    syn = b2.Synapses(pre, post, eqs["model"], on_pre=eqs["on_pre"], on_post=eqs["on_post"], namespace=eqs["namespace"],
                      method="exact")
    syn.connect(j="i")
    syn.w = 0.5
    mon = b2.SpikeMonitor(post)
    net = b2.Network(pre, post, syn, mon)
    net.run(10 * b2.second, namespace={})
    dw = np.asarray(syn.w[:]) - 0.5
    counts = np.asarray(mon.count[:], dtype=float)
    expected = []
    for xi, cnt in zip(x, counts):
        w = torch.tensor([[0.5]], dtype=torch.float64)
        for _ in range(int(cnt)):
            w = w + rule.torch_update(torch.tensor([[xi]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), w)
        expected.append(w.item() - 0.5)
    expected = np.array(expected)
    for group in (x == 0.2, x == 0.8):
        got, want = dw[group].mean(), expected[group].mean()
        assert abs(got - want) <= 0.1 * abs(want), (got, want)
    # toward c x from 0.5: down for x = 0.2, up for x = 0.8 when c x > 0.5
    assert np.sign(dw[x == 0.2].mean()) == -1 and np.sign(dw[x == 0.8].mean()) == np.sign(c * 0.8 - 0.5)


def test_rule_namespace_holds_every_parameter_with_units():
    b2 = quiet_brian2()
    rule = KWTAHebbian(eta=0.1, k=3, c=0.7, theta_plus=0.2, tau_theta=50.0)
    ns = rule.brian2_equations(rate_max=100.0, tau_pre=0.01, presentation=0.05)["namespace"]
    assert ns["eta"] == 0.1 and ns["k_winners"] == 3 and ns["c"] == 0.7 and ns["w_max"] == 0.7 and ns["theta_plus"] == 0.2
    assert ns["tau_theta"] == 50.0 * 0.05 * b2.second  # tau_theta presentations of 50 ms
    assert ns["rate_max"] == 100 * b2.Hz and ns["tau_pre"] == 10 * b2.ms


def _learner(rule, n_in=16, n_out=4, seed=0, w_gain=0.3, **kw):
    """A small learner whose 16 inputs drive its cells above threshold (EPSP 0.3 w of the threshold)."""
    return Brian2KWTALearner(n_in, n_out, rule, target="numpy", seed=seed, w_gain=w_gain, **kw)


PATTERN = np.r_[np.ones(8), np.full(8, 0.5)]  # 8 inputs at x = 1, 8 at x = 0.5


def test_c_scales_the_learned_fixed_point():
    """The rate rule's fixed point is w = c x. One pattern presented 20 times (k = 1, no threshold
    adaptation): the winner's weights from inputs at x = 1 are about twice those from x = 0.5, and halving
    c halves them (ratio in [0.4, 0.6]); the cells that never fired keep their initial weights whatever c
    (neutral case), and no weight exceeds w_max = c."""
    learned = {}
    for c in (1.0, 0.5):
        learner = _learner(KWTAHebbian(eta=0.3, c=c, theta_plus=0.0), w_gain=0.1)
        w0 = learner.weights.copy()
        learner.train(np.tile(PATTERN, (20, 1)))
        W = learner.weights
        moved = np.abs(W - w0).max(1) > 0
        assert 1 <= moved.sum() < 4, moved  # k = 1: a winner learned, the others kept their weights
        assert np.array_equal(W[~moved], w0[~moved]) and W.max() <= c
        learned[c] = (W[moved, :8].mean(), W[moved, 8:].mean())
    for c, (high, low) in learned.items():
        assert 1.6 <= high / low <= 2.4, (c, high, low)  # w proportional to x
    assert 0.4 <= learned[0.5][0] / learned[1.0][0] <= 0.6 and 0.4 <= learned[0.5][1] / learned[1.0][1] <= 0.6, learned


def test_eta_sets_how_far_one_presentation_moves_the_weights():
    """One presentation: the weights of the cells that fired move toward c x (up from their initial
    values below 0.3 for the inputs at x = 1), several times further with eta = 0.2 than with eta = 0.02;
    the cells that did not fire do not move."""
    moves = {}
    for eta in (0.02, 0.2):
        learner = _learner(KWTAHebbian(eta=eta, theta_plus=0.0))
        w0 = learner.weights.copy()
        learner.train(PATTERN[None])
        dW = learner.weights - w0
        fired = np.asarray(learner.spikes.count[:]) > 0
        assert fired.any() and (dW[fired, :8].mean(1) > 0).all()  # toward x = 1
        assert np.abs(dW[~fired]).max(initial=0) == 0
        moves[eta] = np.abs(dW).sum()
    assert moves[0.2] > 4 * moves[0.02], moves


def _threshold_replay(spike_t, spike_i, n_out, theta_plus, tau_s, t_end, dt=0.5e-3):
    """theta_i(t_end) = theta_plus sum over cell i's spikes of exp(-(t_end - dt - t_s) / tau_s) (from rest):
    a spike at step t_s adds theta_plus after that step's state update, and the last update of a run
    that ends at t_end is at t_end - dt."""
    theta = np.zeros(n_out)
    np.add.at(theta, spike_i, theta_plus * np.exp(-(t_end - dt - spike_t) / tau_s))
    return theta


def test_theta_plus_and_tau_theta_set_the_adaptive_thresholds():
    """After training, each cell's threshold offset is what the rule's parameters predict from its recorded
    spikes: theta_plus per spike, decaying with tau_theta presentations (t_present + t_rest seconds each).
    theta_plus = 0 leaves every threshold at 0 (neutral case); the prediction with another tau_theta
    misses (opposite case); a shorter tau_theta decays the thresholds faster over a silent period."""
    b2 = quiet_brian2()
    x = np.random.default_rng(0).random((6, 16))
    period = 0.07
    after_silence = {}
    for theta_plus, tau_theta in ((0.0, 200.0), (0.1, 200.0), (0.1, 5.0)):
        learner = _learner(KWTAHebbian(eta=0.1, theta_plus=theta_plus, tau_theta=tau_theta))
        learner.train(x)
        t_end = float(learner.net.t / b2.second)
        t, i = np.asarray(learner.spikes.t / b2.second), np.asarray(learner.spikes.i)
        assert len(t) > 0
        theta = learner.thresholds
        if theta_plus == 0:
            assert (theta == 0).all()
            continue
        assert np.allclose(theta, _threshold_replay(t, i, 4, theta_plus, tau_theta * period, t_end), rtol=1e-6, atol=1e-12)
        other = 5.0 if tau_theta == 200.0 else 200.0
        assert not np.allclose(theta, _threshold_replay(t, i, 4, theta_plus, other * period, t_end), rtol=1e-3)
        learner.responses(np.zeros((3, 16)))  # three silent presentations: no input, no spikes
        assert float(learner.net.t / b2.second) - t_end == pytest.approx(3 * period)
        ratio = learner.thresholds[theta > 0] / theta[theta > 0]
        assert np.allclose(ratio, np.exp(-3 / tau_theta), rtol=1e-6)
        after_silence[tau_theta] = ratio.mean()
    assert after_silence[5.0] < after_silence[200.0]


def test_k_sets_how_many_cells_win():
    """With the same weights and inputs, k = 3 lets more distinct cells fire per presentation than k = 1
    (the inhibitory cell fires at the k-th excitatory spike)."""
    x = np.random.default_rng(1).random((10, 16))
    active = {}
    for k in (1, 3):
        learner = _learner(KWTAHebbian(k=k), n_out=8)
        active[k] = (learner.responses(x) > 0).sum(1).mean()
    assert active[3] > active[1] >= 1, active


def _replay_weights(w0, pre_t, pre_i, post_t, post_i, n_in, n_out, eqs_ns, b2):
    """Replay the rule's event-driven equations on recorded spikes, per synapse (pre i -> post j):
    at a pre spike apre <- apre exp(-dt/tau_pre) + 1; at a post spike apre decays the same way, then
    w <- clip(w + eta (c apre / (rate_max tau_pre) - w), 0, w_max). In one time step Brian2 runs the
    pre pathway (order -1) before the post pathway (order 1)."""
    eta, c, w_max = eqs_ns["eta"], eqs_ns["c"], eqs_ns["w_max"]
    tau_pre = float(eqs_ns["tau_pre"] / b2.second)
    norm = float(eqs_ns["rate_max"] * eqs_ns["tau_pre"])
    W = w0.copy()
    for i in range(n_in):
        for j in range(n_out):
            events = sorted([(t, 0) for t in pre_t[pre_i == i]] + [(t, 1) for t in post_t[post_i == j]])
            apre, last, w = 0.0, 0.0, W[j, i]
            for t, kind in events:
                apre *= np.exp(-(t - last) / tau_pre)
                last = t
                if kind == 0:
                    apre += 1
                else:
                    w = min(max(w + eta * (c * apre / norm - w), 0.0), w_max)
            W[j, i] = w
    return W


def test_weights_change_as_the_on_post_equation_predicts_from_the_recorded_spikes():
    """The learned weights equal a replay of the rule's equations on the recorded pre and post spikes
    (so no step outside Brian2's synaptic events changed them); a replay with another c, or one that
    ignores the post spikes (no weight change), misses. With plasticity off (responses) spikes occur and
    the weights stay exactly the same."""
    b2 = quiet_brian2()
    rule = KWTAHebbian(eta=0.2, c=0.8, theta_plus=0.1)
    learner = _learner(rule, n_in=6, n_out=3, seed=2, w_gain=1.0)
    pre_mon = b2.SpikeMonitor(learner.input)
    learner.net.add(pre_mon)
    w0 = learner.weights.copy()
    learner.train(np.random.default_rng(3).random((4, 6)) * 0.5 + 0.5)
    pre_t, pre_i = np.asarray(pre_mon.t / b2.second), np.asarray(pre_mon.i)
    post_t, post_i = np.asarray(learner.spikes.t / b2.second), np.asarray(learner.spikes.i)
    assert len(post_t) > 0 and len(pre_t) > 0
    ns = learner.namespace
    predicted = _replay_weights(w0, pre_t, pre_i, post_t, post_i, 6, 3, ns, b2)
    assert np.allclose(learner.weights, predicted, rtol=0, atol=1e-9)
    fired = np.isin(np.arange(3), post_i)
    assert np.array_equal(learner.weights[~fired], w0[~fired])  # no post spike, no change
    assert (np.abs(learner.weights - w0)[fired].max(1) > 1e-3).all()
    wrong_c = _replay_weights(w0, pre_t, pre_i, post_t, post_i, 6, 3, dict(ns, c=0.5, w_max=0.5), b2)
    assert not np.allclose(learner.weights, wrong_c, atol=1e-3)
    assert not np.allclose(learner.weights, w0, atol=1e-3)  # the replay without post spikes
    # plasticity off: spikes, and the weights stay put
    W = learner.weights.copy()
    n_before = learner.spikes.num_spikes
    learner.responses(np.ones((3, 6)))
    assert learner.spikes.num_spikes > n_before and np.array_equal(learner.weights, W)
    assert learner.plastic is False


def test_learner_parameters_are_validated():
    for kw, name in (({"tau_m": 0}, "tau_m"), ({"rate_max": -1}, "rate_max"), ({"t_rest": -0.01}, "t_rest"),
                     ({"dt": 0.03}, "tau_m = 0.02"), ({"dt": 0.06, "tau_m": 0.1}, "steps")):
        with pytest.raises(ValueError, match=name):
            Brian2KWTALearner(4, 3, target="numpy", **kw)
    with pytest.raises(ValueError, match="rule.k"):
        Brian2KWTALearner(4, 3, KWTAHebbian(k=4), target="numpy")
    learner = Brian2KWTALearner(4, 3, target="numpy")
    for x, name in ((np.array([[0.5, np.nan, 0.1, 0.2]]), "x must be finite"), (np.ones((2, 5)), "shape"),
                    (np.full((1, 4), 2.0), r"\[0, 1\]")):
        with pytest.raises(ValueError, match=name):
            learner.train(x)
        with pytest.raises(ValueError, match=name):
            learner.responses(x)
    assert float(learner.net.t) == 0.0  # nothing was simulated


def test_rule_parameters_are_validated():
    with pytest.raises(ValueError, match="eta"):
        KWTAHebbian(eta=0)
    with pytest.raises(ValueError, match="k"):
        KWTAHebbian(k=0)
    with pytest.raises(ValueError, match="rate_max"):
        KWTAHebbian().brian2_equations(rate_max=0)


def test_brian2_network_learns_digits_in_one_run():
    """150 digits presented once in one Brian2 run: direct association above the untrained network
    by at least 10 points, and the adaptive thresholds rose (homeostasis active)."""
    ds = load_digits()
    x, y = ds.x_train[:150].numpy(), ds.y_train[:150]
    xt, yt = ds.x_test[:150].numpy(), ds.y_test[:150]
    learner = Brian2KWTALearner(64, 30, KWTAHebbian(eta=0.1, theta_plus=0.2), target="numpy", seed=0)
    before = direct_association_accuracy(torch.tensor(learner.responses(x)), y, torch.tensor(learner.responses(xt)), yt, 10)
    w0 = learner.weights.copy()
    learner.train(x)
    after = direct_association_accuracy(torch.tensor(learner.responses(x)), y, torch.tensor(learner.responses(xt)), yt, 10)
    assert after["av"] >= before["av"] + 0.10, (before, after)
    assert not np.allclose(learner.weights, w0)
    assert learner.thresholds.max() > 0
