"""Credit assignment checked against the equations they implement and against theory."""

from collections import Counter

import pytest
import torch

from neurolearn.credit import Backprop, EquilibriumProp
from neurolearn.networks import MLP
from neurolearn.objectives import SelfDefinedTarget, SupervisedTarget
from neurolearn.plasticity import ContrastiveHebbian


def _net(sizes, **kw):
    return MLP(sizes, seed=1, **kw)


def test_backprop_step_equals_autograd_sgd():
    """One Backprop step = W - lr * dL/dW with L = MSE(y, d) from plain autograd (no dropout)."""
    torch.manual_seed(0)
    net = _net((6, 5, 4), dropout=(0, 0, 0))
    ref = _net((6, 5, 4), dropout=(0, 0, 0))
    x = torch.rand(7, 6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    obj = SupervisedTarget()
    d = obj.decide(ref(x), None, None, labels)
    loss = ((ref(x) - d) ** 2).mean()
    loss.backward()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    Backprop().step(net, x, obj, None, {}, opt, labels)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p, q.detach() - 0.5 * q.grad, atol=1e-6)


def test_backprop_adam_path_matches_sgd_gradients():
    """With Adam the dense gradient written to .grad equals autograd's."""
    net = _net((6, 5, 4), dropout=(0, 0, 0))
    ref = _net((6, 5, 4), dropout=(0, 0, 0))
    x, labels = torch.rand(3, 6), torch.tensor([0, 3, 1])
    d = SupervisedTarget().decide(ref(x), None, None, labels)
    ((ref(x) - d) ** 2).mean().backward()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Backprop().step(net, x, SupervisedTarget(), None, {}, opt, labels)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7)


def test_backprop_checkable_is_the_chain_rule():
    """The written-out update of Backprop.checkable equals autograd of 1/2 sum (y - d)^2."""
    torch.manual_seed(3)
    net = _net((5, 4, 3), dropout=(0, 0, 0))
    x = torch.rand(6, 5)
    d = (torch.rand(6, 3) > 0.5).float()
    h1 = torch.relu(net.layers[0](x))
    y = net.layers[1](h1).clamp(0, 1)
    (0.5 * ((y - d) ** 2).sum()).backward()
    state = {"x": x, "u1": net.layers[0](x).detach(), "u2": net.layers[1](h1).detach(), "d": d,
             "W1": net.layers[0].weight.detach(), "W2": net.layers[1].weight.detach()}
    g = Backprop().checkable((5, 4, 3)).update(state)
    assert torch.allclose(g["W1"], net.layers[0].weight.grad, atol=1e-6)
    assert torch.allclose(g["W2"], net.layers[1].weight.grad, atol=1e-6)


@pytest.mark.parametrize("beta", [0.2, -0.2, 0.0])
def test_exact_single_layer_solution_equals_euler(beta):
    """The closed form of the clamped Euler recursion equals stepping it (one layer)."""
    torch.manual_seed(0)
    net = _net((10, 30), hidden_activation="hardsigmoid", init_gain=3.0)
    with torch.no_grad():
        net.layers[0].bias.uniform_(-0.5, 1.5)
    x = torch.rand(8, 10)
    d = (torch.rand(8, 30) > 0.7).float()
    mask = (torch.rand(8, 30) > 0.2).float()
    exact = EquilibriumProp(exact_single_layer=True)
    euler = EquilibriumProp(exact_single_layer=False)
    s_free = exact.relax(net, x)
    assert torch.allclose(s_free[0], euler.relax(net, x)[0], atol=1e-6)
    a = exact.relax(net, x, s_free, 10, beta, d, mask)[0]
    b = euler.relax(net, x, s_free, 10, beta, d, mask)[0]
    assert torch.allclose(a, b, atol=1e-6)
    assert ((a == 0) | (a == 1)).any() and ((a > 0) & (a < 1)).any()  # both regimes exercised


def _bptt_gradient(net, x, d, steps):
    """dC/dW by backprop through ``steps`` Euler steps of the free dynamics, C = 1/(2B) sum (s_L - d)^2."""
    W = [l.weight.detach().clone().requires_grad_() for l in net.layers]
    b = [l.bias.detach().clone().requires_grad_() for l in net.layers]
    s = [torch.zeros(x.shape[0], n) for n in net.sizes[1:]]
    L = len(W)
    for _ in range(steps):
        new = []
        for l in range(L):
            below = x if l == 0 else s[l - 1]
            drive = below @ W[l].T + b[l]
            if l < L - 1:
                drive = drive + s[l + 1] @ W[l + 1]
            new.append((s[l] + 0.2 * (-s[l] + drive)).clamp(0, 1))
        s = new
    C = 0.5 * ((s[-1] - d) ** 2).sum() / x.shape[0]
    return torch.autograd.grad(C, W + b)


def test_equilibrium_prop_matches_bptt_gradient_for_small_beta():
    """Scellier & Bengio 2017 / Ernoult et al. 2019: for beta -> 0 the EP update equals the gradient of
    the loss at the free equilibrium computed by backprop through a long (converged) relaxation.
    Symmetric estimator, beta = 1e-3, relaxations of 400 steps; tolerance: 2% relative (max-norm)."""
    torch.manual_seed(0)
    net = _net((6, 5, 4), hidden_activation="hardsigmoid", init_gain=0.5)
    with torch.no_grad():
        for l in net.layers:
            l.bias.fill_(0.2)
    x = torch.rand(4, 6)
    d = torch.rand(4, 4)
    ep = EquilibriumProp(beta=1e-3, free_steps=400, nudged_steps=400, exact_single_layer=False)
    free = ep.relax(net, x)
    plus = ep.relax(net, x, free, 400, 1e-3, d)
    minus = ep.relax(net, x, free, 400, -1e-3, d)
    pre_p, pre_m = [x] + plus[:-1], [x] + minus[:-1]
    scale = 1.0 / (2 * 1e-3 * x.shape[0])
    ups = [ContrastiveHebbian.factors(pre_p[l], plus[l], pre_m[l], minus[l], scale) for l in range(2)]
    grads = _bptt_gradient(net, x, d, 400)
    interior = [((s > 0) & (s < 1)).float().mean().item() for s in free]
    assert min(interior) > 0.5, f"test network should mostly sit inside (0, 1): {interior}"
    for up, gW, gb in zip(ups, grads[:2], grads[2:]):
        for ep_g, bp_g in ((up.dense(), gW), (up.bias, gb)):
            err = (ep_g - bp_g).abs().max() / bp_g.abs().max()
            assert err < 0.02, f"EP vs BPTT relative error {err:.4f}"
    # and the check can fail: with a large beta the estimate is biased beyond the tolerance
    big = 0.5
    plus = ep.relax(net, x, free, 400, big, d)
    up = ContrastiveHebbian.factors(x, plus[0], x, free[0], 1.0 / (big * x.shape[0]))
    err = (up.dense() - grads[0]).abs().max() / grads[0].abs().max()
    assert err > 0.02


@pytest.mark.parametrize("sign", ["random", "symmetric"])
def test_equilibrium_step_learns_a_supervised_task(sign):
    """EP steps toward a learnable supervised target drive the free-phase loss near zero (the
    one-sided "positive" estimator is biased and may fail here, as Laborieux et al. 2021 report)."""
    torch.manual_seed(0)
    net = MLP((8, 20, 4), hidden_activation="hardsigmoid", dropout=(0, 0, 0), seed=1, init_gain=1.0)
    x = torch.rand(32, 8)
    labels = x[:, :4].argmax(1)
    ep = EquilibriumProp(free_steps=30, nudged_steps=10, beta_sign=sign, beta=0.2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    first = float(ep.step(net, x, SupervisedTarget(), None, {}, opt, labels)["loss"])
    for _ in range(300):
        last = float(ep.step(net, x, SupervisedTarget(), None, {}, opt, labels)["loss"])
    assert last < 0.1 * first


def test_equilibrium_rejects_relu_network():
    net = MLP((4, 3, 2))  # relu hidden
    with pytest.raises(ValueError, match="hardsigmoid"):
        EquilibriumProp().respond(net, torch.rand(2, 4))


@pytest.mark.parametrize("kw,name", [({"beta": 0}, "beta"), ({"free_steps": 0}, "free_steps"),
                                     ({"dt": 1.5}, "dt"), ({"beta_sign": "both"}, "beta_sign"),
                                     ({"free_solver": "newton"}, "free_solver"),
                                     ({"nudged_solver": "rk4"}, "nudged_solver"), ({"solver_tol": 0}, "solver_tol")])
def test_equilibrium_parameter_errors(kw, name):
    with pytest.raises(ValueError, match=name):
        EquilibriumProp(**kw)


@pytest.mark.parametrize("sign,distinct", [("random", 2), ("positive", 1)])
def test_beta_sign_of_the_nudged_phase(sign, distinct):
    """Without dropout the only random draw of an EP step is the sign of beta: with "random" the
    batches' generators give exactly two different updates (+beta and -beta), with "positive" one."""
    x, labels = torch.rand(3, 6), torch.tensor([0, 1, 2])
    seen = []
    for seed in range(12):
        net = MLP((6, 5, 4), hidden_activation="hardsigmoid", dropout=(0, 0, 0), seed=1)
        ep = EquilibriumProp(beta=0.2, free_steps=5, nudged_steps=2, beta_sign=sign)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        ep.step(net, x, SupervisedTarget(), None, {}, opt, labels, torch.Generator().manual_seed(seed))
        w = net.layers[0].weight.detach()
        if not any(torch.equal(w, v) for v in seen):
            seen.append(w.clone())
    assert len(seen) == distinct


def _energy(net, x, states, beta=0.0, d=None, mask=None):
    """F = E + beta C of the clamped network (Scellier & Bengio 2017), rho(s) = s on [0, 1], per sample:
    E = 1/2 sum_l |s_l|^2 - sum_l s_l . (W_l s_{l-1} + b_l),  C = 1/2 sum m (d - s_L)^2."""
    below = [x] + states[:-1]
    E = sum(0.5 * (s * s).sum(1) - (s * layer(b)).sum(1) for s, b, layer in zip(states, below, net.layers))
    if beta:
        m = 1.0 if mask is None else mask
        E = E + beta * 0.5 * (m * (d - states[-1]) ** 2).sum(1)
    return E


@pytest.mark.parametrize("beta", [0.0, 0.3, -0.3])
def test_alternating_solver_reaches_the_euler_fixed_point(beta):
    """Gauss-Seidel sweeps of the clamped map reach the state a long Euler relaxation converges to
    (free phase and nudged phase, both signs of beta), and it is a fixed point of the Euler step."""
    torch.manual_seed(0)
    net = _net((12, 20, 15), hidden_activation="hardsigmoid", init_gain=1.5)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.uniform_(-0.3, 0.8)
    x = torch.rand(6, 12)
    d = (torch.rand(6, 15) > 0.7).float()
    mask = (torch.rand(6, 15) > 0.2).float()
    euler = EquilibriumProp(exact_single_layer=False)
    alt = EquilibriumProp(free_solver="alternating", nudged_solver="alternating", solver_tol=1e-7)
    free_e = euler.relax(net, x, steps=3000)
    stats = Counter()
    free_a = alt.relax(net, x, steps=200, stats=stats)
    start_e, start_a = free_e, free_a
    if beta:
        start_e = euler.relax(net, x, free_e, 3000, beta, d, mask)
        start_a = alt.relax(net, x, free_a, 200, beta, d, mask, stats=stats)
    assert stats["free_fallbacks"] == stats["nudged_fallbacks"] == 0
    for a, e in zip(start_a, start_e):
        assert torch.allclose(a, e, atol=1e-5), (a - e).abs().max()
    one_more = euler.relax(net, x, start_a, 1, beta, d if beta else None, mask if beta else None)
    for a, e in zip(start_a, one_more):
        assert torch.allclose(a, e, atol=1e-6)
    s_all = torch.cat(start_a, 1)
    assert ((s_all > 0) & (s_all < 1)).any() and ((s_all == 0) | (s_all == 1)).any()  # both regimes
    # and the opposite verdict: a short Euler phase is measurably away from that fixed point
    short = euler.relax(net, x, steps=5)
    assert max((a - s).abs().max().item() for a, s in zip(free_a, short)) > 1e-2


def test_alternating_solver_on_one_layer_keeps_the_input_drive():
    """One layer, stepped (not the closed form): the solver reaches clamp(u, 0, 1) and leaves the
    precomputed input drive u untouched for the nudged phase that reuses it."""
    net = _net((6, 9), hidden_activation="hardsigmoid", init_gain=3.0)
    x = torch.rand(4, 6)
    u = net.layers[0](x).detach()
    u0 = u.clone()
    alt = EquilibriumProp(exact_single_layer=False, free_solver="alternating")
    out = alt.relax(net, x, drive0=u)[0]
    assert torch.equal(u, u0) and torch.allclose(out, u0.clamp(0, 1))
    assert ((u0 < 0) | (u0 > 1)).any()


def test_alternating_sweeps_never_increase_the_energy():
    """Each sweep sets one layer to the exact minimiser of F with its neighbours held: F decreases."""
    torch.manual_seed(1)
    net = _net((10, 25, 20), hidden_activation="hardsigmoid", init_gain=2.0)
    x = torch.rand(5, 10)
    d = (torch.rand(5, 20) > 0.8).float()
    alt = EquilibriumProp(free_solver="alternating", nudged_solver="alternating", solver_tol=1e-12)
    for beta in (0.0, 0.4):
        states = [torch.zeros(5, n) for n in net.sizes[1:]] if beta == 0 else alt.relax(net, x, steps=100)
        energies = [_energy(net, x, states, beta, d)]
        for _ in range(15):
            states = alt.relax(net, x, states, 1, beta, d if beta else None)
            energies.append(_energy(net, x, states, beta, d))
        diffs = torch.stack([b - a for a, b in zip(energies, energies[1:])])
        assert (diffs <= 1e-5).all()
        if beta == 0:
            assert (energies[-1] < energies[0] - 1e-2).all()


def test_alternating_solver_falls_back_to_euler_when_it_does_not_converge():
    """A budget too small to converge: the phase is redone with the published Euler steps and counted."""
    torch.manual_seed(0)
    net = _net((8, 12, 10), hidden_activation="hardsigmoid", init_gain=2.0)
    x = torch.rand(4, 8)
    alt = EquilibriumProp(free_solver="alternating", solver_tol=1e-9)
    euler = EquilibriumProp()
    stats = Counter()
    out = alt.relax(net, x, steps=2, stats=stats)
    assert stats["free_fallbacks"] == 1 and stats["free_sweeps"] == 2
    for a, e in zip(out, euler.relax(net, x, steps=2)):
        assert torch.equal(a, e)
    alt.relax(net, x, steps=300, stats=stats)
    assert stats["free_fallbacks"] == 1  # converged: not counted again
    assert 2 < stats["free_sweeps"] < 300 and stats["free_solves"] == 2


def test_self_defined_training_spreads_winners():
    """Homeostasis: after training on random data every cell wins sometimes (no dead cells)."""
    torch.manual_seed(0)
    net = _net((20, 12), dropout=(0, 0))
    obj = SelfDefinedTarget(k=2, gamma=0.5, reset_each_epoch=False)
    st = obj.init_state(12)
    opt = torch.optim.SGD(net.parameters(), lr=2.0)
    x = torch.rand(400, 20)
    for i in range(0, 400, 16):
        Backprop().step(net, x[i:i + 16], obj, st, {}, opt)
    wins = torch.zeros(12)
    for i in range(0, 400, 16):
        wins += obj.decide(net(x[i:i + 16]), st).sum(0)
    assert (wins > 0).all()


def _weights_per_block(x, credit, hidden, lr, schedule="linear", dropout=(0.0, 0.0)):
    """Weights after 2 epochs of one-layer training by the reference executor (per-batch updates) and by
    the blocked executor (blocks of 8), with the same keyed random draws."""
    from neurolearn.train import Trainer

    weights = []
    for engine in ("reference", "blocked"):
        net = MLP((x.shape[1], 40), hidden_activation=hidden, dropout=dropout, seed=0)
        cfg = {"epochs": 2, "batch_size": 16, "lr": lr, "optimizer": "sgd", "schedule": schedule,
               "final_lr_factor": 0.5, "block": 8, "engine": engine}
        tr = Trainer(net, SelfDefinedTarget(k=3, gamma=0.3), credit, cfg, seed=0, progress=False)
        assert tr.executor == engine
        tr.fit(x)
        weights.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*weights):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    return weights, cfg


@pytest.mark.parametrize("dropout", [(0.0, 0.0), (0.2, 0.2)])
@pytest.mark.parametrize("silent_inputs", [False, True])
@pytest.mark.parametrize("credit,hidden,lr", [(Backprop(), "relu", 4.0), (EquilibriumProp(), "hardsigmoid", 0.05),
                                              (EquilibriumProp(beta_sign="symmetric"), "hardsigmoid", 0.05)])
def test_blocked_executor_equals_reference(credit, hidden, lr, silent_inputs, dropout):
    """Training a one-layer network with blocks of deferred updates gives the same weights as the
    reference executor's per-batch updates (DeferredLayer's exact current correction), with dropout on
    (every batch draws its masks from its own generator) and when the blocks have silent input columns
    and the GEMMs run on the active columns only."""
    from neurolearn.engine.blocked import active_columns
    from neurolearn.train import Trainer

    torch.manual_seed(0)
    x = torch.rand(200, 30)
    if silent_inputs:  # a silent border of 12 inputs and sparse activity elsewhere, as in MNIST
        x[:, :12] = 0
        x *= torch.rand(200, 30) < 0.3
    assert (active_columns(x) is not None) == silent_inputs
    weights, cfg = _weights_per_block(x, credit, hidden, lr, dropout=dropout)
    if silent_inputs:  # silent inputs' synapses never change
        init = MLP((30, 40), hidden_activation=hidden, dropout=(0.0, 0.0), seed=0).layers[0].weight
        assert torch.equal(weights[1][0][:, :12], init[:, :12].detach())
    # and the comparison can fail: other dropout draws (another seed) give different weights
    net = MLP((30, 40), hidden_activation=hidden, dropout=dropout, seed=0)
    Trainer(net, SelfDefinedTarget(k=3, gamma=0.3), credit, {**cfg, "lr": lr * 0.5}, seed=0, progress=False).fit(x)
    assert not torch.allclose(next(net.parameters()), weights[0][0], atol=1e-4)


def test_block_size_does_not_change_results_under_dropout():
    """Random draws are keyed by (seed, epoch, batch): blocks of 2 and of 8 give the same weights, with dropout."""
    from neurolearn.train import Trainer

    x = torch.rand(160, 20) * (torch.rand(160, 20) < 0.5)
    out = []
    for block in (2, 8):
        net = MLP((20, 30), dropout=(0.2, 0.2), seed=0)
        Trainer(net, SelfDefinedTarget(k=2), Backprop(), {"epochs": 2, "lr": 2.0, "block": block}, progress=False).fit(x)
        out.append(net.layers[0].weight.detach().clone())
    assert (out[0] - out[1]).abs().max() < 1e-5


@pytest.mark.parametrize("credit,hidden,lr", [(Backprop(), "relu", 4.0), (EquilibriumProp(), "hardsigmoid", 0.05)])
def test_deferred_blocks_with_rare_inputs_equal_per_batch_updates(credit, hidden, lr):
    """With input columns active in fewer than RARE_FREQUENCY of the samples, blocks split the
    columns: dense GEMMs on the frequent ones, sparse products on the rare ones. The weights still
    equal those of per-batch updates, and a rare column's synapses do change."""
    from neurolearn.engine.blocked import active_columns, split_columns

    torch.manual_seed(0)
    x = torch.rand(400, 60)
    x[:, :12] = 0  # silent
    x[:, 12:40] *= torch.rand(400, 28) < 0.02  # rare
    x[:, 40:] *= torch.rand(400, 20) < 0.3  # frequent
    cols = active_columns(x)
    n_dense = split_columns(x, cols)
    assert n_dense % 16 == 0 and n_dense < len(cols)  # the split is used
    assert set(cols[:20].tolist()) == set(range(40, 60))  # frequent columns first
    weights, _ = _weights_per_block(x, credit, hidden, lr, schedule="none", dropout=(0.2, 0.2))
    init = MLP((60, 40), hidden_activation=hidden, dropout=(0.0, 0.0), seed=0).layers[0].weight.detach()
    assert not torch.allclose(weights[1][0][:, 12:40], init[:, 12:40])  # rare synapses learned
    assert torch.equal(weights[1][0][:, :12], init[:, :12])  # silent ones did not
    # without rare columns there is no split
    y = torch.rand(100, 32) * (torch.rand(100, 32) < 0.5)
    assert split_columns(y, torch.arange(32)) == 32
