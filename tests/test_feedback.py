"""Random feedback (RF, URF, sign) for dense and conv networks: the equations of Tang et al. 2022 eq. 10
against backprop (equal when B = W, different otherwise), URF's invariant B - W = B(0) - W(0) under Adam,
checkpoint/resume of B, training on digits, and the locality verdicts with their opposites."""

import pytest
import torch

from neurolearn._validate import ParameterError
from neurolearn.credit import Backprop
from neurolearn.credit.feedback import (
    RandomFeedback,
    SignFeedback,
    UpdatedRandomFeedback,
    conv_head_step,
    feedback_errors,
    feedback_mlp_step,
    urf_feedback_step,
)
from neurolearn.data import load_digits
from neurolearn.describe import lookup
from neurolearn.locality import Contract, assert_local, assert_nonlocal
from neurolearn.locality.catalog import catalog
from neurolearn.networks import MLP, Conv, Dense, FeedForward
from neurolearn.networks.layers import Factors, ops
from neurolearn.objectives import SupervisedTarget
from neurolearn.train import Trainer

KW = {"max_examples": 6}


def conv_net(pool="max", seed=0, dtype=torch.float64):
    layers = [Conv(3, 3, padding=1, pool=pool), Conv(4, 3, padding=1, pool="avg"), Dense(10)]
    return FeedForward((1, 8, 8), layers, "tanh", "identity", init="torch", seed=seed).to(dtype)


def dense_net(seed=0):
    return MLP((64, 12, 9, 10), "tanh", "identity", dropout=(0, 0, 0, 0), seed=seed).double()


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def one_step(net, credit, state, x, labels, lr=0.1):
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    credit.step(net, x, SupervisedTarget(), None, state, opt, labels)
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("make", [dense_net, conv_net], ids=["dense", "conv+maxpool"])
def test_rf_with_b_equal_to_w_is_backprop_and_with_its_own_b_only_the_top_layer_agrees(make):
    x, labels = batch()
    bp = one_step(make(), Backprop(), {}, x, labels)
    net = make()
    same = one_step(net, RandomFeedback(), {f"B{l}": net.layers[l].weight.detach().clone() for l in (1, 2)}, x, labels)
    for a, b in zip(bp, same):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    net = make()
    rf = RandomFeedback()
    own = one_step(net, rf, rf.init_state(net, torch.Generator().manual_seed(3)), x, labels)
    # the output layer's delta rule is the same; every layer below gets a different error
    torch.testing.assert_close(own[-2], bp[-2])
    assert all((a - b).abs().max() > 1e-6 for a, b in zip(own[:-2], bp[:-2]))


def test_errors_follow_the_equation_through_max_and_average_pooling():
    """delta_1 = tanh'(h_1) * maxpool^T(avgpool... ): written out by hand for the conv net's lower layer."""
    net = conv_net()
    x, labels = batch(3)
    rf = RandomFeedback()
    state = rf.init_state(net, torch.Generator().manual_seed(0))
    rec = net.forward_train(x)
    grad = torch.randn(3, 10, dtype=torch.float64)
    errors = feedback_errors(net, rec, grad, lambda l: state[f"B{l}"])
    e2 = grad  # identity output
    s = (e2 @ state["B2"]).view(3, 4, 2, 2)  # dL/dx_2 (after the avg pool of layer 1)
    s = s.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4  # avg-pool routing: spread over the window
    e1 = s * (1 - torch.tanh(rec.currents[1]) ** 2)
    torch.testing.assert_close(errors[1], e1)
    down = torch.nn.grad.conv2d_input(rec.pres[1].shape, state["B1"], e1, padding=1)  # transposed conv with B
    a0 = torch.tanh(rec.currents[0])
    win = a0 == torch.nn.functional.max_pool2d(a0, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    e0 = down.repeat_interleave(2, 2).repeat_interleave(2, 3) * win * (1 - a0 ** 2)  # max routing: arg-max only
    torch.testing.assert_close(errors[0], e0)
    assert (errors[0][~win] == 0).all() and (errors[0][win] != 0).any()


def _train(credit, optimizer="adam", epochs=2, out_dir=None, seed=0):
    ds = load_digits()
    net = conv_net(seed=seed, dtype=torch.float32)
    tr = Trainer(net, SupervisedTarget(), credit, {"epochs": epochs, "optimizer": optimizer, "lr": 3e-3,
                                                   "batch_size": 64, "schedule": "none"},
                 progress=False, out_dir=out_dir, seed=seed)
    return tr, ds


def test_urf_keeps_b_minus_w_under_adam_and_rf_keeps_b():
    tr, ds = _train(UpdatedRandomFeedback(), epochs=1)  # the trainer's (fused) Adam
    B0 = {k: v.clone() for k, v in tr.credit_state.items()}
    W0 = [layer.weight.detach().clone() for layer in tr.net.layers]
    tr.fit(ds.x_train[:128], ds.y_train[:128])
    for l in (1, 2):
        B, W = tr.credit_state[f"B{l}"], tr.net.layers[l].weight.detach()
        assert (B - B0[f"B{l}"]).abs().max() > 1e-4  # B moved ...
        torch.testing.assert_close(B - W, B0[f"B{l}"] - W0[l], rtol=0, atol=2e-6)  # ... exactly as W did
    net = conv_net()  # sign feedback, updated, under torch's for-loop Adam
    sf = SignFeedback()
    st = sf.init_state(net, torch.Generator().manual_seed(0))
    D0 = {l: st[f"B{l}"] - net.layers[l].weight.detach() for l in (1, 2)}
    Bs = {l: st[f"B{l}"].clone() for l in (1, 2)}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, foreach=False)
    x, labels = batch()
    for _ in range(3):
        sf.step(net, x, SupervisedTarget(), None, st, opt, labels)
    for l in (1, 2):
        assert (st[f"B{l}"] - net.layers[l].weight - D0[l]).abs().max() < 1e-12
        assert (st[f"B{l}"] - Bs[l]).abs().max() > 1e-3  # B moved with W
    net = conv_net()  # RF: B fixed, so B - W drifts
    rf = RandomFeedback()
    st = rf.init_state(net, torch.Generator().manual_seed(0))
    B0, W0 = st["B1"].clone(), net.layers[1].weight.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        rf.step(net, x, SupervisedTarget(), None, st, opt, labels)
    assert torch.equal(st["B1"], B0) and (st["B1"] - net.layers[1].weight - (B0 - W0)).abs().max() > 1e-4


def test_sign_feedback_sends_errors_through_sign_b():
    net = dense_net()
    x, labels = batch()
    rf = RandomFeedback()
    state = rf.init_state(net, torch.Generator().manual_seed(0))
    signed = one_step(dense_net(), SignFeedback(updated=False), {k: v.clone() for k, v in state.items()}, x, labels)
    ref = one_step(dense_net(), rf, {k: torch.sign(v) for k, v in state.items()}, x, labels)
    plain = one_step(dense_net(), rf, {k: v.clone() for k, v in state.items()}, x, labels)
    for a, b in zip(signed, ref):
        torch.testing.assert_close(a, b)
    assert (signed[0] - plain[0]).abs().max() > 1e-6
    assert SignFeedback().updated and SignFeedback().sign and not RandomFeedback().updated


def test_registered_names_and_bad_parameters():
    assert lookup("credit", "random_feedback") is RandomFeedback
    assert lookup("credit", "updated_random_feedback") is UpdatedRandomFeedback
    assert lookup("credit", "sign_feedback") is SignFeedback
    with pytest.raises(ParameterError, match="init"):
        RandomFeedback(init="normal")
    with pytest.raises(ParameterError, match="gain"):
        RandomFeedback(gain=0.0)
    with pytest.raises(ParameterError, match="FeedForward"):
        RandomFeedback().check_setup(torch.nn.Linear(2, 2), SupervisedTarget())


def test_b_is_drawn_like_the_networks_init():
    net = conv_net()
    B = RandomFeedback().init_state(net, torch.Generator().manual_seed(0))["B1"]
    bound = 1 / (3 * 3 * 3) ** 0.5  # torch init: U(+-1/sqrt(fan_in)), fan_in = 3 channels x 3 x 3
    assert B.shape == net.layers[1].weight.shape and B.abs().max() <= bound and B.abs().max() > 0.8 * bound
    Bx = RandomFeedback(init="xavier", gain=1.0).init_state(net, torch.Generator().manual_seed(0))["B1"]
    assert Bx.abs().max() > bound * 1.2  # xavier bound sqrt(6 / (27 + 36)) = 0.31 > 0.19


def test_resume_keeps_b_and_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    ds = load_digits()
    x, y = ds.x_train[:192], ds.y_train[:192]
    full, _ = _train(UpdatedRandomFeedback(), epochs=3, out_dir=tmp_path / "a")
    full.fit(x, y)
    original = Trainer.save_checkpoint

    def interrupted(self):
        original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", interrupted)
    first, _ = _train(UpdatedRandomFeedback(), epochs=3, out_dir=tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    real = UpdatedRandomFeedback.init_state
    monkeypatch.setattr(UpdatedRandomFeedback, "init_state",
                        lambda self, net, g=None: {k: v * -3.0 for k, v in real(self, net, g).items()})
    resumed, _ = _train(UpdatedRandomFeedback(), epochs=3, out_dir=tmp_path / "b")
    assert not torch.equal(resumed.credit_state["B1"], first.credit_state["B1"])  # a different B before loading
    assert resumed.load_checkpoint()
    resumed.fit(x, y)
    assert resumed.history == full.history
    for k in full.credit_state:
        assert torch.equal(resumed.credit_state[k], full.credit_state[k])
    for a, b in zip(resumed.net.parameters(), full.net.parameters()):
        assert torch.equal(a, b)


def test_rf_trains_a_conv_net_on_digits():
    """A short run lowers the loss and classifies held-out digits well above chance (10%)."""
    ds = load_digits()
    net = FeedForward((1, 8, 8), [Conv(8, 3, padding=1, pool="max"), Conv(16, 3, padding=1, pool="max"), Dense(10)],
                      "tanh", "identity", init="torch", seed=0)
    tr = Trainer(net, SupervisedTarget(), RandomFeedback(), {"epochs": 3, "optimizer": "adam", "lr": 1e-2,
                                                             "batch_size": 32, "schedule": "none"}, progress=False)
    hist = tr.fit(ds.x_train[:512], ds.y_train[:512])
    with torch.no_grad():
        accuracy = (net(ds.x_test).argmax(1) == ds.y_test).float().mean()
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"] and accuracy > 0.5


# ----------------------------------------------------------------------------- locality
def test_rf_conv_step_is_local_and_backprop_is_weight_transport():
    assert_local(lambda s: conv_head_step(s, "rf"), n_populations=3, **KW)
    assert_local(lambda s: conv_head_step(s, "sign"), n_populations=3, **KW)
    assert_nonlocal(lambda s: conv_head_step(s, "bp"), n_populations=3, kinds={"weight transport"}, **KW)


def test_rf_conv_step_without_the_declared_feedback_pathway_is_not_local():
    def undeclared(s):
        c = conv_head_step(s, "rf")
        contracts = dict(c.contracts)
        contracts["W1"] = Contract("conv without B", allows={"pre", "post", "neuron_signal"}, pathways=("target",))
        return type(c)(c.name, c.spec, contracts, c.fn)

    assert_nonlocal(undeclared, n_populations=3, kinds={"undeclared pathway 'feedback B2'"}, **KW)


def test_conv_step_terms_sum_to_the_convolutions_weight_gradient():
    """sum over positions of the checked kernel terms = -conv2d_weight(x, delta_1) (the delta rule of eq. 10)."""
    c = conv_head_step((2, 2, 3), "rf")
    g = torch.Generator().manual_seed(0)
    s = {k: torch.randn(4, *c.spec.shape(k, 4)[1:], generator=g, dtype=torch.float64) if k in ("x", "u1", "u2", "d")
         else torch.randn(*c.spec.shape(k, 4), generator=g, dtype=torch.float64) for k in c.spec.entries}
    out = c.update(s)
    e2 = s["u2"] - s["d"]
    e1 = ((e2 @ s["B2"]) * (1 - torch.tanh(s["u1"]) ** 2)).view(4, 2, 1, 2)
    ref = torch.nn.grad.conv2d_weight(s["x"].view(4, 2, 2, 3), (2, 2, 2, 2), e1)
    torch.testing.assert_close(out["W1"].sum(0), -ref)
    torch.testing.assert_close(out["W2"], -(e2.T @ torch.tanh(s["u1"])))


def test_mlp_checkable_is_the_step_on_recorded_activities_and_its_verdicts():
    """The checkable a recipe's verdict uses computes the step's update from x, u_l, d, W, B (same equations)."""
    net = dense_net()
    x, _ = batch(4)
    rf = RandomFeedback()
    state = rf.init_state(net, torch.Generator().manual_seed(0))
    rec = net.forward_train(x)
    d = torch.rand(4, 10, dtype=torch.float64)
    errors = feedback_errors(net, rec, rec.output - d, lambda l: state[f"B{l}"])
    c = rf.checkable(net.sizes, "target", "identity", "tanh")
    s = {"x": x, "d": d} | {f"u{l + 1}": u for l, u in enumerate(rec.currents)}
    s |= {f"W{l + 1}": layer.weight.detach() for l, layer in enumerate(net.layers)}
    s |= {f"B{l + 1}": state[f"B{l}"] for l in (1, 2)}
    out = c.update(s)
    for l in range(3):
        torch.testing.assert_close(out[f"W{l + 1}"], errors[l].T @ rec.pres[l])
    assert_local(lambda z: RandomFeedback().checkable(z), n_populations=4, **KW)
    assert_local(lambda z: SignFeedback().checkable(z, "error", "identity", "hardtanh"), n_populations=3, **KW)
    assert_nonlocal(lambda z: feedback_mlp_step(z, "bp"), n_populations=3, kinds={"weight transport"}, **KW)


def test_urf_feedback_synapse_is_hebbian_and_copying_w_is_weight_transport():
    assert_local(lambda s: urf_feedback_step(s), n_populations=2, **KW)
    assert_nonlocal(lambda s: urf_feedback_step(s, transport=True), n_populations=2, kinds={"weight transport"}, **KW)


def test_checks_are_in_the_catalogue():
    labels = {e.label: e for e in catalog()}
    assert labels["random feedback, conv + head"].expected_local
    assert not labels["E2E backprop, conv + head"].expected_local
    assert labels["URF feedback synapse"].expected_local


@pytest.mark.parametrize("make", [dense_net, conv_net], ids=["dense", "conv+pool"])
def test_step_applies_the_written_out_errors(make):
    """The step (autograd with the linear maps' backward through B) gives the update of :func:`feedback_errors`
    (the equation written out): W_l <- W_l - lr e_l^T x_{l-1}; opposite case: with B = W the update differs."""
    x, labels = batch()
    net = make()
    rf = RandomFeedback()
    state = rf.init_state(net, torch.Generator().manual_seed(5))
    rec = net.forward_train(x)
    out = SupervisedTarget().error(rec.masked_output(), None, rec.out_mask, labels)
    errors = feedback_errors(net, rec, out.grad, lambda l: state[f"B{l}"])
    expected = []
    for layer, pre, e in zip(net.layers, rec.pres, errors):
        f = Factors(e, pre)
        expected += [layer.weight.detach() - 0.1 * ops(layer).gradient(layer, f)]
        if layer.bias is not None:
            expected.append(layer.bias.detach() - 0.1 * f.bias)
    got = one_step(net, rf, state, x, labels)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    other = rf.init_state(make(), torch.Generator().manual_seed(6))  # another B: the lower layers change otherwise
    diff = one_step(make(), rf, other, x, labels)
    assert all((a - b).abs().max() > 1e-8 for a, b in zip(diff[:-2], expected[:-2]))
