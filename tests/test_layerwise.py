"""Layer-wise learning (Tang et al. 2022 Sec. 3.3, Fig. 4): greedy and randomised schedules, per-layer heads
and optimiser states, the backprop variant equal to Backprop on the one-hidden-layer network (layer -> head),
URF's B - H invariant, resume equal to an uninterrupted run, the locality verdicts."""

import pytest
import torch

from neurolearn._validate import ParameterError
from neurolearn.credit import Backprop
from neurolearn.credit.layerwise import LayerWise, adam_update, layerwise_step
from neurolearn.data import load_digits
from neurolearn.describe import lookup
from neurolearn.locality import assert_local, assert_nonlocal
from neurolearn.locality.catalog import catalog
from neurolearn.networks import Conv, Dense, FeedForward
from neurolearn.objectives import SupervisedTarget
from neurolearn.rng import batch_generator
from neurolearn.train import Trainer

KW = {"max_examples": 6}


def encoder(seed=0, dtype=torch.float64, top_bias=False):
    """Three conv-pool-tanh layers (an E-MNIST3 in miniature on 8x8 digits) and a dense head of 10 cells."""
    layers = [Conv(3, 3, padding=1, pool="max"), Conv(4, 3, padding=1, pool="max"), Conv(5, 3, padding=1, pool="avg"),
              Dense(10, bias=top_bias)]
    return FeedForward((1, 8, 8), layers, "tanh", "identity", init="torch", seed=seed).to(dtype)


def batch(n=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def params(net, state):
    return [p.detach().clone() for p in net.parameters()] + [state[k].clone() for k in sorted(state) if k[0] == "H"]


def test_registered_heads_and_state():
    assert lookup("credit", "layerwise") is LayerWise
    net = encoder()
    st = LayerWise(update="random_feedback").init_state(net, torch.Generator().manual_seed(0))
    # heads of the lower layers: 10 x flatten(x_l); the top layer's head is the network's final dense layer
    assert st["H0"].shape == (10, 3 * 4 * 4) and st["H1"].shape == (10, 4 * 2 * 2) and "H2" not in st
    assert st["B0"].shape == st["H0"].shape and st["B2"].shape == net.layers[3].weight.shape
    assert st["stages"] == 3 and st["stage"] == 0
    assert st["H0"].abs().max() <= 1 / 48 ** 0.5  # PyTorch's default init, U(+-1/sqrt(fan_in))
    assert "B0" not in LayerWise().init_state(net, torch.Generator().manual_seed(0))  # backprop: no B


def test_greedy_trains_only_the_scheduled_layer_and_its_head():
    net = encoder()
    lw = LayerWise(schedule="greedy", epochs_per_layer=2)
    st = lw.init_state(net, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = batch()
    # parameters: W0 b0 W1 b1 W2 b2 W3 (top head), then H0 H1
    changes = {0: {0, 1, 7}, 1: {0, 1, 7}, 2: {2, 3, 8}, 4: {4, 5, 6}, 7: {4, 5, 6}}
    for epoch, moved in changes.items():
        lw.on_epoch_start(st, epoch)
        before = params(net, st)
        out = lw.step(net, x, SupervisedTarget(), None, st, opt, y)
        after = params(net, st)
        assert out["layer"] == min(epoch // 2, 2)
        assert {i for i, (a, b) in enumerate(zip(before, after)) if not torch.equal(a, b)} == moved


def test_greedy_starts_each_layer_with_a_fresh_optimiser_state():
    net = encoder()
    lw = LayerWise(schedule="greedy", epochs_per_layer=2)
    st = lw.init_state(net, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = batch()
    for epoch in range(2):
        lw.on_epoch_start(st, epoch)
        lw.step(net, x, SupervisedTarget(), None, st, opt, y)
    assert float(st["opt0.step"]) == 2  # kept within the block (epoch 1 is not the start of one)
    st["opt1.step"] += 5  # as if stale
    st["opt1.W.m"] += 1.0
    lw.on_epoch_start(st, 2)
    assert float(st["opt1.step"]) == 0 and not st["opt1.W.m"].any() and float(st["opt0.step"]) == 2


def test_random_schedule_visits_every_layer_reproducibly():
    x, y = batch()

    def run():
        net = encoder()
        lw = LayerWise(schedule="random")
        st = lw.init_state(net, torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        layers = [lw.step(net, x, SupervisedTarget(), None, st, opt, y, batch_generator(7, 0, b))["layer"]
                  for b in range(24)]
        return layers, params(net, st), st

    layers, p1, st = run()
    assert set(layers) == {0, 1, 2}
    assert [float(st[f"opt{l}.step"]) for l in range(3)] == [layers.count(l) for l in range(3)]  # one state per layer
    layers2, p2, _ = run()
    assert layers2 == layers and all(torch.equal(a, b) for a, b in zip(p1, p2))
    other = [LayerWise(schedule="random").layer_for_step(encoder(), {}, batch_generator(8, 0, b))
             for b in range(24)]
    assert other != layers  # another seed, another sequence


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_backprop_update_of_one_hidden_layer_equals_backprop(optimizer):
    """Network layer -> head: layer-wise learning with M = H is backprop on it (Tang eq. 9 through the head)."""
    x, y = batch()
    nets = [FeedForward((1, 8, 8), [Conv(3, 3, padding=1, pool="max"), Dense(10, bias=False)], "tanh", "identity",
                        init="torch", seed=0).double() for _ in range(2)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.1) if optimizer == "sgd" else
            torch.optim.Adam(n.parameters(), lr=1e-2, foreach=False) for n in nets]
    lw = LayerWise(update="backprop")
    st = lw.init_state(nets[1], torch.Generator().manual_seed(0))
    for _ in range(3):
        Backprop().step(nets[0], x, SupervisedTarget(), None, {}, opts[0], y)
        lw.step(nets[1], x, SupervisedTarget(), None, st, opts[1], y)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(nets[0].layers[0].weight, encoder().layers[0].weight)


def test_random_feedback_head_differs_from_backprop_and_urf_tracks_h():
    x, y = batch()
    out = {}
    for update in ("backprop", "random_feedback", "updated_random_feedback"):
        net = encoder()
        lw = LayerWise(update=update)
        st = lw.init_state(net, torch.Generator().manual_seed(0))
        B0 = {k: v.clone() for k, v in st.items() if k[0] == "B"}
        H0 = st.get("H0", torch.zeros(())).clone()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(3):
            lw.step(net, x, SupervisedTarget(), None, st, opt, y)
        out[update] = net.layers[0].weight.detach().clone()
        if update == "random_feedback":
            assert all(torch.equal(st[k], v) for k, v in B0.items())
        if update == "updated_random_feedback":
            assert not torch.equal(st["B0"], B0["B0"])
            torch.testing.assert_close(st["B0"] - st["H0"], B0["B0"] - H0, rtol=0, atol=1e-12)
    assert (out["backprop"] - out["random_feedback"]).abs().max() > 1e-6
    assert (out["random_feedback"] - out["updated_random_feedback"]).abs().max() > 1e-9


def test_sign_feedback_head_sends_the_error_through_sign_b_and_b_tracks_h():
    """update = "sign_feedback": delta_0 = f'(u_0) pool^T(delta_z sign(B_0)) (SGD, one step: the gradient read
    back from W's change equals the equation's), and B_0 receives H_0's increment."""
    x, y = batch()
    net = encoder()
    lw = LayerWise(update="sign_feedback")
    st = lw.init_state(net, torch.Generator().manual_seed(0))
    B0, H0, W0 = st["B0"].clone(), st["H0"].clone(), net.layers[0].weight.detach().clone()
    with torch.no_grad():  # the equation, written out with autograd only for pool^T and f'
        u = net.layers[0](x.reshape(-1, 1, 8, 8))
    a = torch.tanh(u).requires_grad_(True)
    pooled = torch.nn.functional.max_pool2d(a, 2)
    z = pooled.flatten(1) @ H0.T
    ez = SupervisedTarget().error(z.detach(), None, None, y).grad  # dL/dz (identity head activation)
    (signal,) = torch.autograd.grad(pooled, a, (ez @ torch.sign(B0)).reshape(pooled.shape))
    delta = signal * (1 - torch.tanh(u) ** 2)
    expected = torch.nn.grad.conv2d_weight(x.reshape(-1, 1, 8, 8), W0.shape, delta, padding=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    lw.step(net, x, SupervisedTarget(), None, st, opt, y)
    torch.testing.assert_close((W0 - net.layers[0].weight.detach()) / 0.1, expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(st["B0"] - st["H0"], B0 - H0, rtol=0, atol=1e-12)
    # opposite case: through B itself (random_feedback) the same step gives another gradient
    net2, rf = encoder(), LayerWise(update="random_feedback")
    st2 = rf.init_state(net2, torch.Generator().manual_seed(0))
    rf.step(net2, x, SupervisedTarget(), None, st2, torch.optim.SGD(net2.parameters(), lr=0.1), y)
    assert (net2.layers[0].weight - net.layers[0].weight).abs().max() > 1e-6


def test_a_random_feedback_type_registered_elsewhere_is_a_head_update():
    """A credit type registered by a user (a RandomFeedback subclass in another module) is accepted by name, and
    its own ``feedback`` is what the head's error goes through; a type that is not a feedback method is refused
    with the allowed names."""
    from dataclasses import dataclass

    from neurolearn.credit.feedback import RandomFeedback
    from neurolearn.describe import REGISTRY, register

    @register("credit", "halved_feedback_test")
    @dataclass(frozen=True)
    class Halved(RandomFeedback):
        def feedback(self, state, l):
            return 0.5 * state[f"B{l}"]

    try:
        x, y = batch()
        nets = [encoder(), encoder()]
        methods = [LayerWise(update="halved_feedback_test"), LayerWise(update="random_feedback")]
        states = [m.init_state(n, torch.Generator().manual_seed(0)) for m, n in zip(methods, nets)]
        torch.testing.assert_close(methods[0].head_feedback(nets[0], states[0], 0), 0.5 * states[0]["B0"])
        for m, n, st in zip(methods, nets, states):
            m.step(n, x, SupervisedTarget(), None, st, torch.optim.SGD(n.parameters(), lr=0.1), y)
        W = encoder().layers[0].weight.detach()
        # the error through B/2 is half the error through B: the conv kernel moves half as far (SGD, one step)
        torch.testing.assert_close(W - nets[0].layers[0].weight.detach(), 0.5 * (W - nets[1].layers[0].weight.detach()),
                                   rtol=1e-8, atol=1e-12)
    finally:
        REGISTRY["credit"].pop("halved_feedback_test", None)
    with pytest.raises(ParameterError, match=r"update must be one of .*'sign_feedback'.*got 'halved_feedback_test'"):
        LayerWise(update="halved_feedback_test")
    with pytest.raises(ParameterError, match="got 'layerwise'"):
        LayerWise(update="layerwise")


def test_adam_update_is_torchs_adam():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 3, generator=g, dtype=torch.float64)
    ref = p.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.01, betas=(0.8, 0.99), eps=1e-6, foreach=False)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t in range(1, 4):
        grad = torch.randn(4, 3, generator=g, dtype=torch.float64)
        ref.grad = grad.clone()
        opt.step()
        adam_update(p, grad, m, v, t, 0.01, 0.8, 0.99, 1e-6)
    torch.testing.assert_close(p, ref.detach(), rtol=0, atol=1e-15)


def _trainer(credit, out_dir, epochs=4):
    net = encoder(dtype=torch.float32, top_bias=True)
    return Trainer(net, SupervisedTarget(), credit, {"epochs": epochs, "optimizer": "adam", "lr": 3e-3,
                                                     "batch_size": 32, "schedule": "none"},
                   progress=False, out_dir=out_dir, seed=3)


@pytest.mark.parametrize("credit", [LayerWise(schedule="greedy", epochs_per_layer=2, update="updated_random_feedback"),
                                    LayerWise(schedule="random", update="random_feedback")], ids=["GLL-URF", "RLL-RF"])
def test_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch, credit):
    ds = load_digits()
    x, y = ds.x_train[:96], ds.y_train[:96]
    full = _trainer(credit, tmp_path / "a")
    full.fit(x, y)
    original = Trainer.save_checkpoint

    def interrupted(self):
        original(self)
        if self.epoch == 1:  # inside the greedy schedule's first block: its Adam state must survive
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _trainer(credit, tmp_path / "b").fit(x, y)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    resumed = _trainer(credit, tmp_path / "b")
    assert resumed.load_checkpoint() and resumed.epoch == 1
    resumed.fit(x, y)
    assert resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.parameters(), full.net.parameters()))
    for k, v in full.credit_state.items():
        assert torch.equal(resumed.credit_state[k], v) if torch.is_tensor(v) else resumed.credit_state[k] == v


def test_bad_setups_are_refused():
    net = encoder()
    with pytest.raises(ParameterError, match="schedule"):
        LayerWise(schedule="cyclic")
    with pytest.raises(ParameterError, match="update"):
        LayerWise(update="dtp")
    with pytest.raises(ParameterError, match="head"):
        LayerWise(head=64).check_setup(net, SupervisedTarget(), "adam")
    LayerWise(head=10).check_setup(net, SupervisedTarget(), "adam")
    one = FeedForward((64,), [Dense(10)], "tanh", "identity")
    with pytest.raises(ParameterError, match="at least two layers"):
        LayerWise().check_setup(one, SupervisedTarget())
    dropped = FeedForward((64,), [Dense(20), Dense(10)], "tanh", "identity", dropout=(0.0, 0.2, 0.0))
    with pytest.raises(ParameterError, match="dropout"):
        LayerWise().check_setup(dropped, SupervisedTarget())


def test_layerwise_rf_head_is_local_and_bp_through_the_head_is_weight_transport():
    assert_local(lambda s: layerwise_step(s, "random_feedback"), n_populations=3, **KW)
    assert_local(lambda s: LayerWise(update="updated_random_feedback").checkable(s), n_populations=3, **KW)
    assert_nonlocal(lambda s: layerwise_step(s, "backprop"), n_populations=3, kinds={"weight transport"}, **KW)
    assert_local(lambda s: LayerWise(update="random_feedback").checkable(s, "error"), n_populations=4, **KW)
    assert_nonlocal(lambda s: LayerWise().checkable(s, "error"), n_populations=3, kinds={"weight transport"}, **KW)
    with pytest.raises(ParameterError, match="three populations"):
        LayerWise().checkable((3, 2))
    labels = {e.label: e.expected_local for e in catalog()}
    assert labels["layer-wise, RF head feedback"] and not labels["layer-wise, BP through the head"]
