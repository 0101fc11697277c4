"""Checking plain-torch training steps on nn.Modules (neurolearn.locality.modules): the state is recorded
from the step -- parameters, inputs, layer outputs via hooks, buffers -- not wired by hand. Every verdict
has a test of the opposite verdict; modules and states are float32."""

import pytest
import torch
from torch import nn

from neurolearn.locality import CheckerError, Contract, Fixed, Signal, check
from neurolearn.locality.modules import check_module_step, module_step_checkable

KW = {"max_examples": 6, "synapses_per_layer": 3, "time_budget_s": 600.0}  # no budget cut (it would make the shrink flaky)
HEBB = Contract("pre, post and own weight", allows={"pre", "post", "weight"})
HIDDEN = Contract("hidden: pre, post", allows={"pre", "post"})
OUTPUT = Contract("output: delta rule", allows={"pre", "post", "neuron_signal"}, pathways=("target",))
FEEDBACK = Contract("hidden: feedback B", allows={"pre", "post", "neuron_signal"}, pathways=("feedback B",))


# ----------------------------------------------------------------------------- one layer: Oja, centring
def oja(model, x):
    """Oja (1982) on an nn.Linear's activations: dW_ij = sum_b y_bi (x_bj - y_bi W_ij)."""
    y = model(x)
    return {"weight": y.T @ x - (y * y).sum(0)[:, None] * model.weight}


def softmax_hebb(model, x):
    """Hebbian with the post activity normalised over the layer: reads every post cell."""
    return {"weight": torch.softmax(model(x), dim=1).T @ x}


def centred_hebb(model, x):
    """Hebbian on batch-centred activity (BatchNorm-like): y_bi - mean_b y_bi reads the other samples."""
    y = model(x)
    return {"weight": (y - y.mean(0, keepdim=True)).T @ x}


def test_oja_on_a_float32_linear_is_local():
    report = check_module_step(nn.Linear(3, 2), oja, HEBB, inputs={"x": 3}, **KW)
    assert report.local, str(report)
    assert list(report.contracts) == ["weight"]


def test_softmax_normalised_hebb_reads_other_cells():
    report = check_module_step(nn.Linear(3, 3), softmax_hebb, HEBB, inputs={"x": 3}, **KW)
    assert report.kinds == {"depends on other cells of the layer"}, str(report)


def test_batch_centring_is_batch_statistics_and_plain_hebb_is_not():
    report = check_module_step(nn.Linear(3, 2), centred_hebb, HEBB, inputs={"x": torch.zeros(5, 3)}, **KW)
    assert "batch statistics" in report.kinds, str(report)

    def hebb(model, x):
        y = model(x)
        return {"weight": y.T @ x}

    assert check_module_step(nn.Linear(3, 2), hebb, HEBB, inputs={"x": 3}, **KW).local


def test_oja_reading_the_weight_without_permission_is_caught():
    report = check_module_step(nn.Linear(3, 2), oja, Contract("pre, post", allows={"pre", "post"}), inputs={"x": 3}, **KW)
    assert "reads its own weight the contract does not allow" in report.kinds, str(report)


# ----------------------------------------------------------------------------- two layers: backprop
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def backprop(model, x, target):
    """Plain autograd: L = 1/2 sum_b |f(x_b) - d_b|^2, loss.backward() (dW = -dL/dW)."""
    loss = 0.5 * ((model(x) - target) ** 2).sum()
    loss.backward()


def test_backprop_first_layer_is_weight_transport():
    report = check_module_step(mlp(), backprop, {"0": HIDDEN}, inputs={"x": 3}, signals={"target": "target"}, **KW)
    assert "weight transport" in report.kinds, str(report)
    assert list(report.contracts) == ["0"]


def test_backprop_output_layer_checked_alone_is_local():
    report = check_module_step(mlp(), backprop, {"2": OUTPUT}, inputs={"x": 3}, signals={"target": "target"}, **KW)
    assert report.local, str(report)


def test_backprop_output_layer_without_the_target_pathway_is_not():
    contract = Contract("output, no target", allows={"pre", "post"})
    report = check_module_step(mlp(), backprop, {"2": contract}, inputs={"x": 3}, signals={"target": "target"}, **KW)
    assert "undeclared pathway 'target'" in report.kinds, str(report)


def test_mean_loss_is_batch_statistics_unless_declared():
    def mean_mse(model, x, target):
        nn.functional.mse_loss(model(x), target).backward()

    kw = {"inputs": {"x": 3}, "signals": {"target": "target"}, **KW, "max_examples": 4}
    assert "batch statistics" in check_module_step(mlp(), mean_mse, {"2": OUTPUT}, **kw).kinds
    assert check_module_step(mlp(), mean_mse, {"2": OUTPUT}, batch_reduction="mean", **kw).local


def test_the_derived_update_is_the_steps_own_gradient():
    """On the state the module itself produces, the checkable's dW is -grad of the real backward pass."""
    net = mlp()
    ch = module_step_checkable(net, backprop, {"0": HIDDEN, "2": OUTPUT}, inputs={"x": 3}, signals={"target": "target"})
    x, d = torch.randn(5, 3), torch.randn(5, 2)
    state = {"x": x, "target": d, "0:out": net[0](x).detach(), "2:out": net(x).detach()}
    state |= {k: v.detach().clone() for k, v in net.named_parameters()}
    assert set(state) == set(ch.spec.entries)
    assert [(layer.name, layer.post, layer.pre) for layer in ch.spec.layers] == [("0", "0", "x"), ("2", "2", "0")]
    dW = ch.update(state)
    backprop(net, x, d)
    torch.testing.assert_close(dW["0"], -net[0].weight.grad)
    torch.testing.assert_close(dW["2"], -net[2].weight.grad)
    # a different recorded hidden activity changes the hidden layer's update (the hook replaces it)
    state["0:out"] = -state["0:out"]
    assert not torch.allclose(ch.update(state)["0"], dW["0"])


def test_the_users_module_is_left_as_it_was():
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def sgd(model, x, target):
        backprop(model, x, target)
        with torch.no_grad():
            for p in model.parameters():
                p -= p.grad

    check_module_step(net, sgd, {"2": OUTPUT}, inputs={"x": 3}, signals={"target": "target"}, max_examples=2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_in_place_weight_change_is_the_update():
    """Protocol 3: no return, no .grad -- the weights changed in place (lr 1)."""
    def hebb_in_place(model, x):
        with torch.no_grad():
            y = model(x)
            model.weight += y.T @ x

    def centred_in_place(model, x):
        with torch.no_grad():
            y = model(x)
            model.weight += (y - y.mean(0)).T @ x

    kw = {"inputs": {"x": 3}, **KW}
    assert check_module_step(nn.Linear(3, 2), hebb_in_place, HEBB, **kw).local
    assert "batch statistics" in check_module_step(nn.Linear(3, 2), centred_in_place, HEBB, **kw).kinds


# ----------------------------------------------------------------------------- feedback alignment, user-written
class FANet(nn.Module):
    """Two layers and a fixed random feedback matrix ``B`` (a buffer, shaped like ``fc2.weight``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        self.register_buffer("B", torch.randn(2, 4))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def fa_step(model, x, target):
    """Feedback alignment (Lillicrap et al. 2016): e2 = y - d, e1 = (e2 B) * relu'(u1); dW = -e^T pre."""
    u1 = model.fc1(x)
    h = torch.relu(u1)
    e2 = model.fc2(h) - target
    e1 = (e2 @ model.B) * (u1 > 0).to(u1.dtype)
    return {"fc1.weight": -e1.T @ x, "fc2.weight": -e2.T @ h}


def test_feedback_alignment_with_declared_fixed_b_is_local():
    report = check_module_step(FANet(), fa_step, {"fc1": FEEDBACK, "fc2": OUTPUT}, inputs={"x": 3},
                               signals={"target": "target"}, fixed={"B": "feedback B"}, **KW)
    assert report.local, str(report)


def test_feedback_alignment_contract_without_the_pathway_is_not():
    report = check_module_step(FANet(), fa_step, {"fc1": HIDDEN}, inputs={"x": 3}, signals={"target": "target"},
                               fixed={"B": "feedback B"}, **KW)
    assert "undeclared pathway 'feedback B'" in report.kinds, str(report)


def test_an_undeclared_buffer_is_an_undeclared_pathway():
    report = check_module_step(FANet(), fa_step, {"fc1": FEEDBACK}, inputs={"x": 3}, signals={"target": "target"}, **KW)
    assert "undeclared pathway 'B'" in report.kinds, str(report)


def test_explicit_fixed_and_signal_entries():
    ch = module_step_checkable(FANet(), fa_step, {"fc1": FEEDBACK}, inputs={"x": 3},
                               signals={"target": Signal("fc2", "target")},
                               fixed={"B": Fixed("feedback B", post="fc2", pre="fc1")})
    assert ch.spec.entries["B"] == Fixed("feedback B", post="fc2", pre="fc1")
    assert [(layer.post, layer.pre) for layer in ch.spec.layers] == [("fc1", "x"), ("fc2", "fc1")]
    assert check(ch, dtype=torch.float32, **KW).local


def test_backprop_through_the_same_module_is_weight_transport():
    def bp_step(model, x, target):
        (0.5 * ((model(x) - target) ** 2).sum()).backward()

    report = check_module_step(FANet(), bp_step, {"fc1": FEEDBACK}, inputs={"x": 3}, signals={"target": "target"},
                               fixed={"B": "feedback B"}, **KW)
    assert "weight transport" in report.kinds, str(report)


# ----------------------------------------------------------------------------- errors
def _ok(model, x):
    return {"weight": model(x).T @ x}


@pytest.mark.parametrize("module", [nn.ReLU(), nn.Sequential(nn.ReLU(), nn.Tanh())])
def test_a_module_without_weights_is_an_error(module):
    with pytest.raises(CheckerError, match="no 2-D weight.*nn.Linear"):
        module_step_checkable(module, _ok, HEBB, inputs={"x": 3})


def test_a_step_returning_an_unknown_key_is_an_error():
    with pytest.raises(CheckerError, match=r"unknown name\(s\) \['W'\].*\['weight'\]"):
        module_step_checkable(nn.Linear(3, 2), lambda m, x: {"W": m(x).T @ x}, HEBB, inputs={"x": 3})


def test_a_contract_for_an_unknown_layer_is_an_error():
    with pytest.raises(CheckerError, match=r"unknown layer\(s\) \['1'\].*\['0', '2'\]"):
        module_step_checkable(mlp(), backprop, {"1": HIDDEN}, inputs={"x": 3}, signals={"target": "target"})


def test_other_misuse_says_what_was_expected():
    lin = nn.Linear(3, 2)
    with pytest.raises(CheckerError, match="inputs must map"):
        module_step_checkable(lin, _ok, HEBB, inputs={})

    def forward_only(model, x):
        model(x)

    with pytest.raises(CheckerError, match="gave no update for layer 'weight'"):
        module_step_checkable(lin, forward_only, HEBB, inputs={"x": 3})
    with pytest.raises(CheckerError, match=r"shape \(2, 3\)"):
        module_step_checkable(lin, lambda m, x: {"weight": m(x)}, HEBB, inputs={"x": 3})
    with pytest.raises(CheckerError, match="the step raised TypeError"):
        module_step_checkable(lin, lambda m, inp: None, HEBB, inputs={"x": 3})
    with pytest.raises(CheckerError, match="batch_reduction must be one of"):
        module_step_checkable(lin, _ok, HEBB, inputs={"x": 3}, batch_reduction="avg")
    with pytest.raises(CheckerError, match="fixed names unknown buffer"):
        module_step_checkable(lin, _ok, HEBB, inputs={"x": 3}, fixed={"B": "feedback B"})
    with pytest.raises(CheckerError, match="never ran layer"):
        module_step_checkable(mlp(), lambda m, x: {"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(2, 4)},
                              HIDDEN, inputs={"x": 3})


def test_a_layer_run_twice_records_two_phases():
    """Each call of a layer in one step is its own recorded activity (a second phase)."""
    def two_phase(model, x):
        y_free = model(x)
        y_nudged = model(x + 1.0)
        return {"weight": (y_nudged - y_free).T @ x}

    ch = module_step_checkable(nn.Linear(3, 2), two_phase, HEBB, inputs={"x": 3})
    assert {"weight:out", "weight:out2"} <= set(ch.spec.entries)
    assert check(ch, dtype=torch.float32, **KW).local

    def other_cell(model, x):
        y_free, y_nudged = model(x), model(x + 1.0)
        return {"weight": (y_nudged.flip(1) - y_free).T @ x}

    report = check(module_step_checkable(nn.Linear(3, 2), other_cell, HEBB, inputs={"x": 3}), dtype=torch.float32, **KW)
    assert report.kinds == {"depends on other cells of the layer"}, str(report)
