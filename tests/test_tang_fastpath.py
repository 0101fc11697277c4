"""The fused executor (neurolearn.engine.fused) against the reference executor: same weights after training.

Tiny E-MNIST3-like conv networks (conv-tanh-maxpool layers and a dense head), the contrastive hinge on two
random views per image (the views' randomness from the batch generators), Backprop, random feedback (RF, URF,
sign) and DTP (DTP's noise too),
Adam and SGD: every parameter, and the credit state (B, DTP's inverses and their moments), equal after two epochs. Opposite cases:
a planted fault in the fast path's routing or in its activation backward is caught by the same comparison,
and the setups it does not support fall back to the reference with the reason.
"""

from __future__ import annotations

import pytest
import torch

from neurolearn.credit import Backprop
from neurolearn.credit.dtp import DTP
from neurolearn.credit.feedback import RandomFeedback, SignFeedback, UpdatedRandomFeedback
from neurolearn.credit.layerwise import LayerWise
from neurolearn.engine import fused
from neurolearn.networks import FeedForward
from neurolearn.networks.layers import Conv, Dense
from neurolearn.objectives.contrastive import ContrastiveHinge
from neurolearn.objectives.supervised import SupervisedTarget
from neurolearn.train import Trainer


def tiny_net(hidden="tanh", pool="max", seed=0, dropout=None, last_pool="max", shape="pooled", output="identity"):
    """(1, 12, 12) -> conv 4 (pool 2) -> conv 6 (pool 2) -> conv 8 (pool 3 over 3x3: 1x1) -> Dense(5);
    ``shape="dense"``: conv 4 (pool 2) -> Dense(12) -> Dense(5); ``"strided"``: convs of stride 2, no pooling;
    ``"gaps"``: windows 2x2 every 3 cells (12 -> 4), then 2x2 on 4x4... on a 3x3 map (the last row and column in
    no window)."""
    layers = [Conv(4, 3, padding=1, pool=pool), Conv(6, 3, padding=1, pool=pool),
              Conv(8, 3, padding=1, pool=last_pool, pool_kernel=3, pool_stride=3), Dense(5, bias=False)]
    if shape == "dense":
        layers = [Conv(4, 3, padding=1, pool=pool), Dense(12), Dense(5, bias=False)]
    elif shape == "gaps":
        layers = [Conv(4, 3, padding=1, pool=pool, pool_kernel=2, pool_stride=3), Conv(6, 2, pool=pool),
                  Dense(5, bias=False)]
    elif shape == "strided":
        layers = [Conv(4, 3, stride=2, padding=1), Conv(6, 3, stride=2, padding=1), Dense(5, bias=False)]
    return FeedForward((1, 12, 12), layers, hidden_activation=hidden, output_activation=output,
                       dropout=dropout, init="torch", seed=seed)


def images(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=g)
    return x * (x > 0.4)  # a zero background, as MNIST: exact ties of the conv currents inside pooling windows


OBJECTIVE = ContrastiveHinge(m1=0.3, m2=0.6, grad_block=False, affine_fraction=0.5)


def train(engine, credit, net_kw=None, optimizer="adam", objective=OBJECTIVE, labels=False, epochs=2):
    net = tiny_net(**(net_kw or {}))
    cfg = {"epochs": epochs, "batch_size": 16, "optimizer": optimizer, "lr": 3e-3 if optimizer == "adam" else 0.05,
           "schedule": "none", "engine": engine}
    tr = Trainer(net, objective, credit, cfg, seed=3, progress=False)
    assert tr.executor == engine
    x = images()
    y = torch.arange(x.shape[0]) % 5 if labels else None
    tr.fit(x, y)
    return tr


def assert_same(a, b, atol=1e-5):
    for (name, p), q in zip(a.net.named_parameters(), b.net.parameters()):
        torch.testing.assert_close(p, q, atol=atol, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    for k, v in a.credit_state.items():
        if torch.is_tensor(v):
            torch.testing.assert_close(v, b.credit_state[k], atol=atol, rtol=1e-4, msg=lambda m: f"credit {k}: {m}")
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("credit", [Backprop(), RandomFeedback(), UpdatedRandomFeedback(), SignFeedback(), DTP(),
                                    DTP(top="random_feedback", train_inverse_first=False), DTP(inverse_noise=0.0)],
                         ids=["backprop", "rf", "urf", "sign", "dtp", "dtp_rf_inverses_after", "dtp_no_noise"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_equals_reference(credit, optimizer):
    ref, fast = train("reference", credit, optimizer=optimizer), train("fused", credit, optimizer=optimizer)
    moved = sum(float((p - q).detach().abs().max()) for p, q in zip(ref.net.parameters(), tiny_net().parameters()))
    assert moved > 1e-3  # the comparison is between trained networks
    assert_same(ref, fast)


@pytest.mark.parametrize("update", ["backprop", "random_feedback", "updated_random_feedback", "sign_feedback"])
@pytest.mark.parametrize("schedule", ["greedy", "random"])
def test_fused_layerwise_equals_reference(schedule, update):
    """Greedy (one epoch per layer, every stage and the top one) and randomised layer-wise learning: the layers,
    the heads, B and every stage's Adam moments equal; the stages trained are the same."""
    credit = LayerWise(schedule=schedule, update=update, epochs_per_layer=1)
    ref, fast = train("reference", credit, epochs=4), train("fused", credit, epochs=4)
    moved = [float((p - q).detach().abs().max()) for p, q in zip(ref.net.parameters(), tiny_net().parameters())]
    assert min(moved[:-1]) > 1e-4  # every layer trained
    assert_same(ref, fast)
    kw = {"shape": "dense"}  # a dense hidden layer's stage
    assert_same(train("reference", credit, kw, epochs=3), train("fused", credit, kw, epochs=3))


def test_fused_layerwise_wrong_head_feedback_is_caught(monkeypatch):
    """Opposite case: the head's error sent to the layer through H where the method says B differs."""
    credit = LayerWise(schedule="random", update="random_feedback")
    ref = train("reference", credit)
    original = fused.layerwise_gradients

    def through_h(credit, *args, **kw):
        return original(LayerWise(schedule="random", update="backprop"), *args, **kw)

    monkeypatch.setattr(fused, "layerwise_gradients", through_h)
    with pytest.raises(AssertionError):
        assert_same(ref, train("fused", credit))


@pytest.mark.parametrize("hidden", ["relu", "identity"])
def test_fused_equals_reference_other_activations_and_no_pool(hidden):
    for credit in (Backprop(), DTP()):
        assert_same(train("reference", credit, {"hidden": hidden}), train("fused", credit, {"hidden": hidden}))
    kw = {"pool": "none", "last_pool": "none"}
    assert_same(train("reference", Backprop(), kw), train("fused", Backprop(), kw))


def test_fused_equals_reference_dense_hidden_layer_and_strided_dtp():
    """A dense hidden layer after a pooled conv (for DTP a dense inverse), pooling windows with gaps between them
    and a map whose last row and column are in no window, and DTP's strided variant (transposed convs of stride 2,
    no pooling)."""
    for credit in (Backprop(), DTP()):
        for shape in ("dense", "gaps"):
            assert_same(train("reference", credit, {"shape": shape}), train("fused", credit, {"shape": shape}))
    strided = DTP(variant="strided")
    assert_same(train("reference", strided, {"shape": "strided"}), train("fused", strided, {"shape": "strided"}))


def test_fused_equals_reference_supervised_head():
    """Another objective (the MSE to a one-hot target, with labels) through the same fast path."""
    obj = SupervisedTarget()
    for credit in (Backprop(), DTP()):
        assert_same(train("reference", credit, objective=obj, labels=True), train("fused", credit, objective=obj, labels=True))


def test_auto_picks_fused_and_says_why_not():
    net = tiny_net()
    assert Trainer(net, OBJECTIVE, Backprop(), {"optimizer": "adam"}, progress=False).executor == "fused"
    for kw, credit, why in [({"dropout": (0.1, 0, 0, 0, 0)}, Backprop(), "dropout"),
                            ({"pool": "avg"}, Backprop(), "max pooling"),
                            ({"hidden": "sigmoid"}, Backprop(), "activation"),
                            ({}, Backprop(rule=Backprop().rule), None)]:
        tr = Trainer(tiny_net(**kw), OBJECTIVE, credit, {"optimizer": "adam"}, progress=False)
        if why is None:
            assert tr.executor == "fused"
        else:
            assert tr.executor == "reference" and why in tr.executor_reasons["fused"]
    from neurolearn.networks import MLP

    tr = Trainer(MLP((144, 8, 5), dropout=(0, 0, 0), seed=0), OBJECTIVE, Backprop(), {"optimizer": "adam"}, progress=False)
    assert tr.executor == "reference" and "no conv layer" in tr.executor_reasons["fused"]
    tr = Trainer(tiny_net(), OBJECTIVE, Backprop(), {"optimizer": "adam"}, progress=False)
    tr.device = torch.device("meta")  # a network off the CPU (no GPU here): the fused executor declines it
    assert "tested equal to the reference on the CPU only" in fused.FusedConvExecutor.unsupported(tr)


def test_ties_are_broken_as_max_pool2d():
    """The winner masks of fused.max_pool equal F.max_pool2d's indices on maps full of ties (the zero background of
    the test images gives equal currents in many windows), and one cell per window wins."""
    net = tiny_net()
    with torch.no_grad():
        a = torch.tanh(net.layers[0](images()))
    a = torch.cat([a, a.round(decimals=1)])  # more ties
    d = net.descriptions[0]
    pooled, winners = fused.max_pool(a, d)
    ref, idx = torch.nn.functional.max_pool2d(a, 2, 2, return_indices=True)
    assert torch.equal(pooled, ref)
    chosen = torch.zeros_like(a, dtype=torch.bool)
    chosen.flatten(2).scatter_(2, idx.flatten(2), True)
    mine = torch.zeros_like(chosen)
    for v, w in zip(fused.windows(mine, d), winners):
        v.copy_(w)
    assert torch.equal(mine, chosen)
    ties = sum((v == pooled).int() for v in fused.windows(a, d)) > 1
    assert ties.float().mean() > 0.1  # the case the first-cell rule decides
    # opposite case: the last tied cell instead of the first differs
    last = [(v == pooled) for v in fused.windows(a, d)]
    assert not torch.equal(last[-1], winners[-1])


def test_a_wrong_routing_is_caught(monkeypatch):
    """Opposite case: errors routed to the first cell of each window instead of its arg-max differ."""
    ref = train("reference", Backprop())
    original = fused.max_pool

    def first_cell(a, d, routing=True):
        m, winners = original(a, d, routing)
        if winners is not None:
            winners = [torch.ones_like(winners[0])] + [torch.zeros_like(w) for w in winners[1:]]
        return m, winners

    monkeypatch.setattr(fused, "max_pool", first_cell)
    with pytest.raises(AssertionError):
        assert_same(ref, train("fused", Backprop()))


def test_a_wrong_derivative_is_caught(monkeypatch):
    """Opposite case: ``f'`` read at the current instead of the activity (1 - u^2 for tanh) differs, for DTP too."""
    ref = train("reference", DTP())
    def wrong(g, a):
        return g * (1 - torch.atanh(a.clamp(-0.99, 0.99)) ** 2)

    monkeypatch.setitem(fused.BACKWARD, "tanh", (torch.Tensor.tanh_, wrong, lambda g, a: g.copy_(wrong(g, a))))
    with pytest.raises(AssertionError):
        assert_same(ref, train("fused", DTP()))


@pytest.mark.parametrize("which", ["copy", "in place"])
def test_a_wrong_derivative_in_either_form_is_caught(monkeypatch, which):
    """Opposite case for each form of ``grad * f'`` (a fresh result: DTP's output error of a tanh head; one written
    into ``grad``: every error Backprop sends down): either one wrong (``f'`` dropped) is caught."""
    credit, kw = (DTP(), {"output": "tanh"}) if which == "copy" else (Backprop(), {})
    ref = train("reference", credit, kw)
    assert_same(ref, train("fused", credit, kw))
    forms = list(fused.BACKWARD["tanh"])
    forms[1 if which == "copy" else 2] = lambda g, a: g
    monkeypatch.setitem(fused.BACKWARD, "tanh", tuple(forms))
    with pytest.raises(AssertionError):
        assert_same(ref, train("fused", credit, kw))


def test_a_wrong_noisy_forward_is_caught(monkeypatch):
    """Opposite case: the inverses' training input pooled by the mean instead of the maximum differs."""
    ref = train("reference", DTP())

    def mean_pool(net, l, h):
        u = fused.ops(net.layers[l]).current(net.layers[l], h.flatten(1) if l == net.n_layers - 1 else h)
        d = net.descriptions[l]
        return torch.tanh(torch.nn.functional.avg_pool2d(u, d.pool_kernel, d.pool_stride)) if u.ndim == 4 else u

    monkeypatch.setattr(fused, "pooled_first", mean_pool)
    with pytest.raises(AssertionError):
        assert_same(ref, train("fused", DTP()))
