"""Difference target propagation with pooling (Tang, Yang & Amit 2022, Algorithm 1): inverse shapes, the
targets' equations, the local forward update, the inverses' training and checkpointing, a short run, and
the locality verdicts with their opposites (METHODS.md sections 4 and 8)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurolearn._validate import ParameterError
from neurolearn.credit.dtp import DTP, conv_layer_checkable, inverse_checkable, inverse_geometry, transpose_geometry
from neurolearn.data import load_digits
from neurolearn.describe import lookup
from neurolearn.locality import Contract, assert_local, assert_nonlocal, check
from neurolearn.locality.catalog import catalog
from neurolearn.networks import Conv, Dense, FeedForward
from neurolearn.objectives import SupervisedTarget
from neurolearn.train import Trainer

KW = {"max_examples": 4, "seed": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in these tests (tiny tensors: two threads on a shared machine only wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed=0, **kw):
    """(1, 12, 12) -> conv4/pool (4, 6, 6) -> conv6/pool (6, 3, 3) -> Dense(8): two encoder layers and a head."""
    layers = [Conv(4, 3, padding=1, pool="max"), Conv(6, 3, padding=1, pool="max"), Dense(8, bias=False, activation="identity")]
    return FeedForward((1, 12, 12), layers, hidden_activation="tanh", init="torch", seed=seed, **kw)


def forward(net, x):
    with torch.no_grad():
        return net.forward_all(x)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g), torch.randint(0, 8, (n,), generator=g)


# ----------------------------------------------------------------------------- shapes
def test_registered_and_validated():
    assert lookup("credit", "dtp") is DTP
    with pytest.raises(ParameterError, match="top"):
        DTP(top="weights")
    with pytest.raises(ParameterError, match="alpha"):
        DTP(alpha=0)
    with pytest.raises(ParameterError, match="inverse_noise"):
        DTP(inverse_noise=-1.0)
    DTP(inverse_noise=0.0)  # sigma 0 is allowed (Algorithm 1 without noise)


def test_inverse_shapes_emnist3_and_edtp4():
    """E-MNIST3: g_3 3x3 -> 7x7 (kernel 3, stride 2, padding 0), g_2 7x7 -> 14x14 (padding 1, output padding 1);
    E-DTP4 (32x32): every inverse padding 1, output padding 1; g_l(h_l) has h_{l-1}'s shape."""
    mnist3 = FeedForward((1, 28, 28), [Conv(32, 3, padding=1, pool="max"), Conv(64, 3, padding=1, pool="max"),
                                       Conv(128, 3, padding=1, pool="max"), Dense(64, activation="identity")],
                         hidden_activation="tanh", init="torch", seed=0)
    geo = inverse_geometry(mnist3)
    assert sorted(geo) == [2, 3]
    assert geo[3]["in_shape"] == (128, 3, 3) and geo[3]["out_shape"] == (64, 7, 7)
    assert (geo[3]["kernel"], geo[3]["stride"], geo[3]["padding"], geo[3]["output_padding"]) == ((3, 3), (2, 2), (0, 0), (0, 0))
    assert (geo[2]["kernel"], geo[2]["stride"], geo[2]["padding"], geo[2]["output_padding"]) == ((3, 3), (2, 2), (1, 1), (1, 1))
    dtp4 = FeedForward((3, 32, 32), [Conv(32, 3, padding=1, pool="max"), Conv(64, 3, padding=1, pool="max"),
                                     Conv(128, 3, padding=1, pool="max"), Conv(256, 3, padding=1, pool="max"),
                                     Dense(64, activation="tanh")], hidden_activation="tanh", init="torch", seed=0)
    geo4 = inverse_geometry(dtp4)
    assert sorted(geo4) == [2, 3, 4] and all(g["padding"] == (1, 1) and g["output_padding"] == (1, 1) for g in geo4.values())
    d = DTP()
    for net, shape in ((mnist3, (1, 28, 28)), (dtp4, (3, 32, 32))):
        st = d.init_state(net, torch.Generator().manual_seed(0))
        hs = forward(net, torch.rand(2, *shape))
        for l in inverse_geometry(net):
            assert d.inverse(net, l, hs[l], st).shape == hs[l - 1].shape


def test_inverse_shapes_in_general():
    """Odd maps, valid convolutions (the kernel grows when 3 cannot fit), strided convolutions, a dense encoder
    layer after a map: every g_l(h_l) has h_{l-1}'s shape; the solved geometry satisfies the output-size equation."""
    nets = [
        (DTP(), FeedForward((2, 13, 11), [Conv(3, 3, pool="max"), Conv(4, 3, pool="max"), Dense(5), Dense(3)],
                            hidden_activation="tanh", init="torch", seed=1)),
        (DTP(variant="strided"), FeedForward((1, 15, 15), [Conv(3, 3, stride=2), Conv(4, 3, stride=2, padding=1),
                                                           Dense(3)], hidden_activation="tanh", init="torch", seed=1)),
    ]
    for d, net in nets:
        st = d.init_state(net, torch.Generator().manual_seed(0))
        hs = forward(net, torch.rand(3, *net.input_shape))
        geo = inverse_geometry(net)
        assert len(geo) == net.n_layers - 2
        for l in geo:
            assert d.inverse(net, l, hs[l], st).shape == hs[l - 1].shape
    assert inverse_geometry(nets[0][1])[2]["kernel"] == (4, 3)  # 1x1 -> 5x4 at stride 2: kernel 3 cannot reach 5 rows
    for n_in in range(1, 7):
        for n_out in range(1, 16):
            for s in (1, 2, 3):
                k, p, op = transpose_geometry(n_in, n_out, s, 3)
                assert k >= 3 and p >= 0 and 0 <= op < s and (n_in - 1) * s - 2 * p + k + op == n_out
                assert F.conv_transpose2d(torch.zeros(1, 1, n_in, n_in), torch.zeros(1, 1, k, k), stride=s, padding=p,
                                          output_padding=op).shape[-1] == n_out


def test_network_must_match_the_variant():
    strided = FeedForward((1, 12, 12), [Conv(4, 3, stride=2), Conv(4, 3, stride=2), Dense(3)], init="torch")
    with pytest.raises(ParameterError, match="variant 'pooling'.*layer 1 has pool='none', stride=2.*variant='strided'"):
        DTP().check_setup(strided, SupervisedTarget())
    DTP(variant="strided").check_setup(strided, SupervisedTarget())
    with pytest.raises(ParameterError, match="variant 'strided'.*layer 1 has pool='max', stride=1"):
        DTP(variant="strided").check_setup(tiny(), SupervisedTarget())
    with pytest.raises(ParameterError, match="dropout must be 0"):
        DTP().check_setup(tiny(dropout=(0.2, 0, 0, 0)), SupervisedTarget())
    with pytest.raises(ParameterError, match="at least 2 layers"):
        DTP().init_state(FeedForward((4,), [Dense(3)]))


# ----------------------------------------------------------------------------- targets
def test_targets_follow_difference_correction():
    """hat h_2 = h_2 - alpha dL/dh_2 (dL/dh_2 by autograd of the objective's loss through the head);
    hat h_1 = h_1 - g_2(h_2) + g_2(hat h_2) with g_2 = tanh(ConvTranspose2d(6 -> 4, k 3, s 2, p 1, op 1))."""
    net, d, obj = tiny(), DTP(alpha=0.5), SupervisedTarget()
    st = d.init_state(net, torch.Generator().manual_seed(0))
    x, lab = batch()
    hs = forward(net, x)
    out = obj.error(hs[3], None, None, lab)
    t = d.targets(net, hs, d.output_error(net, hs, out.grad), st)
    h2 = hs[2].clone().requires_grad_(True)
    loss = ((net.layers[2](h2.flatten(1)) - F.one_hot(lab, 8).float()) ** 2).mean()
    (grad_h2,) = torch.autograd.grad(loss, h2)
    torch.testing.assert_close(t[2], hs[2] - 0.5 * grad_h2)
    g2 = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
    with torch.no_grad():
        g2.weight.copy_(st["inv2.weight"])
        g2.bias.copy_(st["inv2.bias"])
        torch.testing.assert_close(t[1], hs[1] - torch.tanh(g2(hs[2])) + torch.tanh(g2(t[2])))
        assert not torch.allclose(t[1], torch.tanh(g2(t[2])), atol=1e-3)  # the correction matters here


def test_perfect_inverse_reduces_the_correction_to_g_of_the_target():
    """With g_2 = f_2^{-1} exactly (identity activations, G = W_2^{-1}, c = -W_2^{-1} b_2), g_2(h_2) = h_1, so
    hat h_1 = g_2(hat h_2); with random feedback the top target reads B instead of W_3."""
    net = FeedForward((4,), [Dense(4), Dense(4), Dense(3)], hidden_activation="identity", output_activation="identity",
                      init="torch", seed=2)
    x, lab = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    for top in ("backprop", "random_feedback"):
        d = DTP(inverse_activation="identity", top=top)
        st = d.init_state(net, torch.Generator().manual_seed(0))
        W2, b2 = net.layers[1].weight.detach(), net.layers[1].bias.detach()
        st["inv2.weight"] = torch.linalg.inv(W2)
        st["inv2.bias"] = -torch.linalg.inv(W2) @ b2
        hs = forward(net, x)
        e = d.output_error(net, hs, SupervisedTarget().error(hs[3], None, None, lab).grad)
        t = d.targets(net, hs, e, st)
        torch.testing.assert_close(d.inverse(net, 2, hs[2], st), hs[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t[1], d.inverse(net, 2, t[2], st), atol=1e-5, rtol=1e-5)
        feedback_top = st["feedback"] if top == "random_feedback" else net.layers[2].weight.detach()
        torch.testing.assert_close(t[2], hs[2] - 0.5 * e @ feedback_top)
    assert not torch.allclose(st["feedback"], net.layers[2].weight.detach())


# ----------------------------------------------------------------------------- forward update
def _local_gradients(net, hs, targets, x_loss):
    """dL_l/dW_l (and dL_l/db_l) for every encoder layer, L_l = mean((f_l(h_{l-1}) - hat h_l)^2) with h_{l-1} and
    hat h_l constant, and dL/dW_L of the objective for the head -- all layers' parameters as leaves of one sum."""
    params = [p for layer in net.layers for p in layer.parameters()]
    total = 0.0
    for l in range(1, net.n_layers):
        _, a = net.stage(l - 1, hs[l - 1])
        total = total + ((a - targets[l]) ** 2).mean()
    total = total + x_loss(net.stage(net.n_layers - 1, hs[-2])[1])
    return dict(zip([id(p) for p in params], torch.autograd.grad(total, params)))


def test_forward_update_is_the_gradient_of_the_local_loss():
    """One step with SGD(lr): every encoder layer moves by -lr dL_l/dW_l (its own loss only), the head by
    -lr dL/dW_L; the same update from targets without difference correction (plain TP) differs, and so does
    end-to-end backprop."""
    lr, x, lab = 0.1, *batch()
    net, d, obj = tiny(), DTP(), SupervisedTarget()
    st = d.init_state(net, torch.Generator().manual_seed(0))
    ref = copy.deepcopy(net)
    hs = forward(ref, x)
    st_ref = {k: v.clone() for k, v in st.items()}
    d.train_inverses(ref, hs, st_ref, torch.Generator().manual_seed(7))  # the step trains the inverses first
    out = obj.error(hs[3], None, None, lab)
    e = d.output_error(ref, hs, out.grad)
    targets = d.targets(ref, hs, e, st_ref)
    onehot = F.one_hot(lab, 8).float()
    grads = _local_gradients(ref, hs, targets, lambda y: ((y - onehot) ** 2).mean())
    d.step(net, x, obj, None, st, torch.optim.SGD(net.parameters(), lr=lr), lab, torch.Generator().manual_seed(7))
    for p_new, p_old in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p_new.detach(), p_old.detach() - lr * grads[id(p_old)])
    for k in ("inv2.weight", "inv2.bias", "inv2.weight.m"):
        torch.testing.assert_close(st[k], st_ref[k])
    # opposite: plain target propagation (hat h_1 = g_2(hat h_2), no difference correction) moves layer 1 otherwise
    plain = dict(targets)
    plain[1] = d.inverse(ref, 2, targets[2], st_ref)
    tp = _local_gradients(ref, hs, plain, lambda y: ((y - onehot) ** 2).mean())
    w1 = ref.layers[0].weight
    assert not torch.allclose(net.layers[0].weight.detach(), w1.detach() - lr * tp[id(w1)], atol=1e-6)
    torch.testing.assert_close(tp[id(ref.layers[1].weight)], grads[id(ref.layers[1].weight)])  # layer 2: same target
    # and end-to-end backprop is a different update of layer 1
    bp = torch.autograd.grad(((ref(x) - onehot) ** 2).mean(), w1)[0]
    assert not torch.allclose(net.layers[0].weight.detach(), w1.detach() - lr * bp, atol=1e-6)


def test_forward_update_with_adam_and_random_feedback_top():
    """The trainer's optimiser applies the update (Adam here); the head's random feedback B never changes."""
    net, d, obj = tiny(), DTP(top="random_feedback"), SupervisedTarget()
    st = d.init_state(net, torch.Generator().manual_seed(0))
    B = st["feedback"].clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    x, lab = batch()
    d.step(net, x, obj, None, st, opt, lab, torch.Generator().manual_seed(1))
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, net.parameters()))
    assert torch.equal(st["feedback"], B)


# ----------------------------------------------------------------------------- inverses
def test_inverses_reduce_their_reconstruction_loss():
    """30 Adam steps on one batch (the same noise each time): L_inv falls (sigma 1: much of it is the noise's, which
    no inverse removes; sigma 0.1: most of it goes); the forward weights are untouched."""
    hs = forward(tiny(), batch(16)[0])
    for sigma, factor in ((1.0, 0.95), (0.1, 0.5)):
        net, d = tiny(), DTP(inverse_lr=1e-2, inverse_noise=sigma)
        st = d.init_state(net, torch.Generator().manual_seed(0))
        w2 = net.layers[1].weight.detach().clone()

        def loss():
            return float(d.inverse_losses(net, hs, st, torch.Generator().manual_seed(3), grad=False)[2][0])

        first = loss()
        for _ in range(30):
            d.train_inverses(net, hs, st, torch.Generator().manual_seed(3))
        assert loss() < factor * first
        assert torch.equal(net.layers[1].weight, w2) and float(st["inverse_steps"]) == 30


def test_inverse_loss_equation_sigma_zero_and_adam():
    """sigma 0: L_inv = mean((g_2(f_2(h_1)) - h_1)^2), no draws from the generator; sigma 1: tilde h = h_1 + eps with
    eps drawn from it. The inverses' Adam equals torch.optim.Adam on the same gradients; SGD is p - lr g."""
    net = tiny()
    hs = forward(net, batch()[0])
    d0 = DTP(inverse_noise=0.0)
    st = d0.init_state(net, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    got = d0.inverse_losses(net, hs, st, g)[2][0]
    assert torch.equal(g.get_state(), before)
    with torch.no_grad():
        want = ((d0.inverse(net, 2, net.stage(1, hs[1])[1], st) - hs[1]) ** 2).mean()
    torch.testing.assert_close(got, want)
    d1 = DTP(inverse_noise=1.0)
    eps = torch.randn(hs[1].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tilde = hs[1] + eps
        want = ((d1.inverse(net, 2, net.stage(1, tilde)[1], st) - tilde) ** 2).mean()
    torch.testing.assert_close(d1.inverse_losses(net, hs, st, torch.Generator().manual_seed(5))[2][0], want)
    # Adam
    d = DTP(inverse_lr=1e-2)
    st = d.init_state(net, torch.Generator().manual_seed(0))
    w = st["inv2.weight"].clone().requires_grad_(True)
    b = st["inv2.bias"].clone().requires_grad_(True)
    adam = torch.optim.Adam([w, b], lr=1e-2)
    for i in range(3):
        gw, gb = d.inverse_losses(net, hs, st, torch.Generator().manual_seed(i))[2][1]
        w.grad, b.grad = gw.clone(), gb.clone()
        adam.step()
        d.train_inverses(net, hs, st, torch.Generator().manual_seed(i))
        torch.testing.assert_close(st["inv2.weight"], w.detach())
        torch.testing.assert_close(st["inv2.bias"], b.detach())
    ds = DTP(inverse_lr=1e-2, inverse_optimizer="sgd")
    st = ds.init_state(net, torch.Generator().manual_seed(0))
    w0 = st["inv2.weight"].clone()
    gw, _ = ds.inverse_losses(net, hs, st, torch.Generator().manual_seed(0))[2][1]
    ds.train_inverses(net, hs, st, torch.Generator().manual_seed(0))
    torch.testing.assert_close(st["inv2.weight"], w0 - 1e-2 * gw)


# ----------------------------------------------------------------------------- training and checkpoints
def digits_net(seed=0):
    """(1, 8, 8) -> conv4/pool (4, 4, 4) -> conv6/pool (6, 2, 2) -> Dense(10)."""
    return FeedForward((1, 8, 8), [Conv(4, 3, padding=1, pool="max"), Conv(6, 3, padding=1, pool="max"),
                                   Dense(10, activation="identity")], hidden_activation="tanh", init="torch", seed=seed)


TRAINING = {"epochs": 3, "optimizer": "adam", "lr": 3e-3, "batch_size": 32, "schedule": "none"}


def test_short_run_on_digits_lowers_the_loss():
    ds = load_digits()
    x, y = ds.x_train[:480].reshape(-1, 1, 8, 8), ds.y_train[:480]
    tr = Trainer(digits_net(), SupervisedTarget(), DTP(), TRAINING, progress=False)
    assert tr.executor == "fused"  # "auto" picks the fused executor (tests/test_tang_fastpath.py: equal to the reference)
    hist = tr.fit(x, y)
    assert hist[-1]["loss"] < 0.9 * hist[0]["loss"]
    assert float(tr.credit_state["inverse_steps"]) == 3 * 15


def test_checkpoint_and_resume_restore_the_inverses(tmp_path, monkeypatch):
    """The inverses and their Adam moments are in the checkpoint; a run interrupted after epoch 1 and resumed (with
    different inverses made at start-up, which the checkpoint replaces) equals the uninterrupted run."""
    ds = load_digits()
    x, y = ds.x_train[:256].reshape(-1, 1, 8, 8), ds.y_train[:256]
    full = Trainer(digits_net(), SupervisedTarget(), DTP(), TRAINING, out_dir=tmp_path / "a", progress=False)
    full.fit(x, y)
    from neurolearn.runs import load_checkpoint_files

    t, _ = load_checkpoint_files(tmp_path / "a")
    assert {"credit.inv2.weight", "credit.inv2.bias", "credit.inv2.weight.m", "credit.inv2.weight.v",
            "credit.inverse_steps"} <= set(t)
    original = Trainer.save_checkpoint

    def interrupted(self):
        original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(digits_net(), SupervisedTarget(), DTP(), TRAINING, out_dir=tmp_path / "b", progress=False).fit(x, y)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    real = DTP.init_state
    monkeypatch.setattr(DTP, "init_state", lambda self, net, g=None: {k: v * -3.0 for k, v in real(self, net, g).items()})
    resumed = Trainer(digits_net(), SupervisedTarget(), DTP(), TRAINING, out_dir=tmp_path / "b", progress=False)
    assert resumed.load_checkpoint() and resumed.epoch == 1
    resumed.fit(x, y)
    assert resumed.history == full.history
    for k in ("inv2.weight", "inv2.bias", "inv2.weight.v", "inverse_steps"):
        torch.testing.assert_close(resumed.credit_state[k], full.credit_state[k])
    for a, b in zip(resumed.net.parameters(), full.net.parameters()):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- locality
def test_whole_step_top_backprop_is_weight_transport():
    for n in ((3, 2, 2), (3, 2, 2, 2)):
        assert_nonlocal(DTP().checkable(n, "target", "identity", "tanh"), kinds={"weight transport"}, **KW)


def test_whole_step_top_random_feedback_is_local():
    for n in ((3, 2, 2), (3, 2, 2, 2)):
        ck = DTP(top="random_feedback").checkable(n, "target", "identity", "tanh")
        assert_local(ck, **KW)
    # opposite of local: the same step whose hidden layers do not declare the feedback and inverse pathways
    bare = type(ck)(ck.name, ck.spec, {k: Contract(c.name, c.allows, ("target",)) for k, c in ck.contracts.items()}, ck.fn)
    r = assert_nonlocal(bare, **KW)
    assert any("undeclared pathway" in v.kind for v in r.violations)
    with pytest.raises(ParameterError, match="at least 3 populations"):
        DTP().checkable((3, 2))


def test_whole_step_checkable_is_the_step_on_an_mlp():
    """The checkable's hidden update equals the method's layer error times the pre activity (up to the mean's
    2/N), on an MLP with the same weights and inverse G (no bias)."""
    net = FeedForward((3,), [Dense(4, bias=False), Dense(3, bias=False), Dense(2, bias=False)], hidden_activation="tanh",
                      output_activation="identity", init="torch", seed=4)
    d = DTP(alpha=0.5)
    st = d.init_state(net, torch.Generator().manual_seed(0))
    st["inv2.bias"].zero_()
    x, lab = torch.rand(5, 3), torch.tensor([0, 1, 1, 0, 1])
    hs = forward(net, x)
    onehot = F.one_hot(lab, 2).float()
    e = d.output_error(net, hs, (hs[3] - onehot))  # dL/dy of 1/2 |y - d|^2, summed
    targets = d.targets(net, hs, e, st)
    errs = d.layer_errors(net, hs, targets)
    ck = d.checkable((3, 4, 3, 2), "target", "identity", "tanh")
    with torch.no_grad():
        state = {"x": x, "d": onehot, "G2": st["inv2.weight"]}
        for l, layer in enumerate(net.layers, start=1):
            state[f"u{l}"] = layer(hs[l - 1])
            state[f"W{l}"] = layer.weight.detach()
    out = ck.update(state)
    for l in (1, 2):
        n = hs[l].numel()
        torch.testing.assert_close(out[f"W{l}"] * 2 / n, errs[l - 1].T @ hs[l - 1])
    torch.testing.assert_close(out["W3"], e.T @ hs[2])


def test_conv_layer_with_declared_pool_routing_is_local_computed_routing_is_not():
    kw = dict(KW, n_populations=2, max_size=2)  # channels in 1..2 (a 3x3 map): the contract does not depend on them
    assert_local(lambda s: conv_layer_checkable(s[0], s[1]), **kw)
    assert_nonlocal(lambda s: conv_layer_checkable(s[0], s[1], routing="computed"),
                    kinds={"depends on other cells of the layer"}, **kw)


def test_conv_layer_checkable_is_the_methods_conv_update():
    """sum over positions of the checkable's terms = conv weight gradient of the method's layer error (2/N apart)."""
    c_in, c_out, B = 2, 3, 4
    net = FeedForward((c_in, 3, 3), [Conv(c_out, 2, pool="max"), Dense(2)], hidden_activation="tanh", init="torch", seed=3)
    x = torch.randn(B, c_in, 3, 3, generator=torch.Generator().manual_seed(0))
    hs = forward(net, x)
    target = torch.randn(B, c_out, 1, 1, generator=torch.Generator().manual_seed(1))
    err = DTP().layer_errors(net, hs, {1: target})[0]
    want = torch.nn.grad.conv2d_weight(x, net.layers[0].weight.shape, err)
    with torch.no_grad():
        u = net.layers[0](x)
        _, idx = F.max_pool2d(torch.tanh(u), 2, 2, return_indices=True)
        win = torch.zeros_like(u).flatten(2).scatter_(2, idx.flatten(2), 1.0).reshape(u.shape)
    ck = conv_layer_checkable(c_in, c_out)
    state = {"x": x.flatten(1), "u": u.flatten(1), "t": target.expand_as(u).flatten(1), "win": win.flatten(1)}
    got = ck.spec.layers[0].kernel_update(ck.update(state)["K"]) * 2 / hs[1].numel()
    torch.testing.assert_close(got, want)


def test_inverse_update_is_local_to_the_feedback_pathway_and_transport_is_not():
    assert_local(inverse_checkable(3, 2), **KW)
    assert_nonlocal(inverse_checkable(3, 2, reads="forward"), kinds={"weight transport"}, **KW)


def test_checks_are_registered_for_check_locality():
    labels = [e.label for e in catalog() if e.label.startswith("DTP")]
    assert sorted(set(labels)) == ["DTP conv layer", "DTP inverse", "DTP top=backprop", "DTP top=random_feedback"]
    rows = {(e.label, e.n_populations): e for e in catalog() if e.label.startswith("DTP")}
    assert rows[("DTP top=backprop", 4)].expected_kinds == {"weight transport"}
    assert rows[("DTP top=random_feedback", 4)].expected_local
    report = check(rows[("DTP top=backprop", 3)].factory, n_populations=3, **KW)
    assert not report.local and "weight transport" in report.kinds
