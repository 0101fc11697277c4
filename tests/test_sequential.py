"""Sequential presentation (anchor, store, positive, update, K negatives, reset) against the batched hinge update."""

import copy

import pytest
import torch

from neurolearn._validate import ParameterError
from neurolearn.credit import Backprop
from neurolearn.credit.sequential import SequentialHinge
from neurolearn.describe import lookup
from neurolearn.networks import MLP
from neurolearn.objectives.contrastive import ContrastiveHinge, hinge_errors


def _setup(seed=0, B=6, sizes=(5, 4, 3)):
    g = torch.Generator().manual_seed(seed)
    net = MLP(sizes, hidden_activation="tanh", output_activation="identity").double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(2 * B, sizes[0], generator=g, dtype=torch.float64)  # views A then views B
    return net, x


def _after(credit, objective, net, x, lr=0.05):
    net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    out = credit.step(net, x, objective, None, credit.init_state(net), opt)
    return net, out["loss"]


def _close(a, b, atol=1e-10):
    return all(torch.allclose(p, q, rtol=0, atol=atol) for p, q in zip(a.parameters(), b.parameters()))


OBJECTIVES = [ContrastiveHinge(m1=1.0, m2=3.0, negatives=3, view="none"),
              ContrastiveHinge(m1=1.0, m2=3.0, negatives=3, weighting="paper", view="none"),
              ContrastiveHinge(m1=0.5, m2=2.5, negatives=0, view="none"),
              ContrastiveHinge(m1=1.0, m2=3.0, negatives=4, grad_block=False, view="none"),
              ContrastiveHinge(m1=0.5, m2=2.5, negatives=0, grad_block=False, view="none")]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["K3-code", "K3-paper", "all", "K4-noblock", "all-noblock"])
def test_held_weights_equal_the_batched_update(objective):
    """hold_weights=True with plain SGD: the weights after one batch equal Backprop on the batched objective
    (the sum of the sequential updates = the gradient of the summed loss, eqs. 3-7); the losses are equal."""
    net, x = _setup()
    batched, loss_b = _after(Backprop(), objective, net, x)
    seq, loss_s = _after(SequentialHinge(hold_weights=True), objective, net, x)
    assert not _close(batched, net)                          # the step did something
    assert _close(seq, batched)
    assert abs(loss_s - loss_b) < 1e-9
    # and the gates did open on both sides: some positives and some negatives contributed
    zA, zB = net(x[:6]), net(x[6:])
    _, _, gB = hinge_errors(zA.detach(), zB.detach(), objective.m1, objective.m2, objective.negatives or "all",
                            objective.weighting, objective.grad_block)
    assert gB.abs().sum() > 0


def test_opposite_cases_differ_from_the_batched_update():
    """Updating after every presentation, a memory that does not hold, or a broken inhibitory copy: not equal."""
    objective = OBJECTIVES[0]
    net, x = _setup()
    batched, _ = _after(Backprop(), objective, net, x)
    for credit in (SequentialHinge(hold_weights=False),
                   SequentialHinge(hold_weights=True, memory_recurrence=0.0),
                   SequentialHinge(hold_weights=True, inhibition_gain=0.5)):
        seq, _ = _after(credit, objective, net, x)
        assert not _close(seq, batched), credit


def test_biological_mode_updates_after_every_presentation():
    """hold_weights=False: the first anchor's positive changes the weights before its negatives are presented, so
    the result equals presenting the sequence one presentation per batch with weights held (B = 1 anchor steps)."""
    objective = ContrastiveHinge(m1=0.1, m2=3.0, negatives=2, view="none")
    net, x = _setup(B=2)
    seq, _ = _after(SequentialHinge(hold_weights=False), objective, net, x)
    held, _ = _after(SequentialHinge(hold_weights=True), objective, net, x)
    assert not _close(seq, held)
    # by hand: anchor 0 (positive 0, negative 1), then anchor 1 (positive 1); each presentation one SGD step on
    # autograd through the network seeded with the circuit's delta; each anchor stored at the weights of its time
    from neurolearn.circuits.hinge_error import HingeError

    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    circuit = HingeError(m1=0.1, m2=3.0)

    def update(M, t, phase):
        y = ref(x[2 + t : 3 + t])
        opt.zero_grad()
        y.backward(circuit(M, y.detach(), phase, 0.5).delta)
        opt.step()

    with torch.no_grad():
        M0 = ref(x[0:1])
    update(M0, 0, "positive")
    update(M0, 1, "negative")
    with torch.no_grad():
        M1 = ref(x[1:2])
    update(M1, 1, "positive")
    assert _close(seq, ref)


def test_sequential_requires_the_contrastive_hinge_and_a_valid_inner_method():
    from neurolearn.objectives import SupervisedTarget

    net, x = _setup()
    with pytest.raises(ParameterError, match="contrastive hinge"):
        SequentialHinge().check_setup(net, SupervisedTarget())
    with pytest.raises(ParameterError, match="contrastive hinge"):
        _after(SequentialHinge(), SupervisedTarget(), net, x)
    with pytest.raises(ParameterError, match="inner"):
        SequentialHinge(inner="sequential")
    with pytest.raises(ParameterError, match="inner"):
        SequentialHinge(inner="nope")
    with pytest.raises(ParameterError, match="2B rows"):
        _after(SequentialHinge(), OBJECTIVES[0], net, x[:5])
    assert lookup("credit", "sequential") is SequentialHinge


def test_trainer_runs_the_sequential_mode_and_it_lowers_the_hinge_loss():
    """Through the Trainer (the reference executor calls step per batch): three epochs of the biological mode on
    40 random 3x3 images lower the batched hinge loss on fixed noisy views."""
    from neurolearn.networks import Dense, FeedForward
    from neurolearn.train import Trainer

    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 3, 3, generator=g)
    net = FeedForward((1, 3, 3), [Dense(8), Dense(4, bias=False, activation="identity")], hidden_activation="tanh",
                      init="torch", seed=0)
    obj = ContrastiveHinge(m1=0.5, m2=2.0, negatives=3, view="none")
    xx = torch.cat([x, x + 0.05 * torch.randn(x.shape, generator=g)])

    def loss():
        with torch.no_grad():
            return float(obj.error(torch.cat([net(xx[:40]), net(xx[40:])]), None).loss)

    before = loss()
    Trainer(net, obj, SequentialHinge(), {"epochs": 3, "batch_size": 10, "lr": 0.01, "schedule": "none"},
            seed=0, progress=False).fit(x)
    assert loss() < before


def test_sequential_refuses_an_objective_circuit_it_would_ignore():
    net, _ = _setup()
    circuit = ContrastiveHinge(m1=1.0, m2=3.0, negatives=3, view="none", error_source="circuit", inhibition_gain=0.5)
    with pytest.raises(ParameterError, match=r"inhibition_gain = 0.5 in \[objective\], 1.0 in \[credit\]"):
        SequentialHinge().check_setup(net, circuit)
    SequentialHinge(inhibition_gain=0.5).check_setup(net, circuit)  # the same circuit in both sections
    SequentialHinge(inhibition_gain=0.5).check_setup(net, OBJECTIVES[0])  # closed form: only [credit] has a circuit
