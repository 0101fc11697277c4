"""The contrastive hinge trained with its error from the circuits (Tang et al. 2022, Section 3.1, eqs. 4-7, Appendix A):
``error_source = "circuit"`` against the closed form (eqs. 4-6) on drawn outputs and in training, with the opposite
cases (a broken inhibitory copy, a graded sign, a memory that does not hold); against the sequential presentation with
the same faults; ``circuits = ["hinge_error"]`` in a recipe; the locality entry of the circuit-delivered top layer."""

import copy
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn import recipe as recipes
from neurolearn._validate import ParameterError
from neurolearn.circuits import circuit_params
from neurolearn.circuits.hinge_error import HingeError
from neurolearn.circuits.memory import ShortTermMemory
from neurolearn.credit import Backprop
from neurolearn.credit.sequential import SequentialHinge
from neurolearn.data import load_digits
from neurolearn.experiment import run_recipe, setup_checkables
from neurolearn.locality import check
from neurolearn.locality.report import builtin_checks
from neurolearn.networks import MLP
from neurolearn.networks.feedforward import FeedForward
from neurolearn.networks.layers import Conv, Dense
from neurolearn.objectives.contrastive import ContrastiveHinge, circuit_hinge_errors, hinge_errors, hinge_top_checkable
from neurolearn.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
FAULTS = [{"inhibition_gain": 0.5}, {"inhibition_gain": 1.5}, {"graded": True},
          {"memory_recurrence": 0.0, "memory_retention": 2.0}]


@st.composite
def _outputs(draw):
    """``2n`` rows of ``d`` outputs (views A then B); half the time from a few levels, so that equal entries (sgn 0)
    and L1 distances exactly at a margin (gates at their threshold) are common."""
    n, d = draw(st.integers(1, 7)), draw(st.integers(1, 4))
    el = st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.5]) if draw(st.booleans()) else st.floats(-3, 3, allow_nan=False, width=32)
    rows = draw(st.lists(st.lists(el, min_size=d, max_size=d), min_size=2 * n, max_size=2 * n))
    return torch.tensor(rows, dtype=torch.float64)


@settings(max_examples=80, deadline=None)
@given(_outputs(), st.sampled_from([0, 2, 3, 5]), st.sampled_from(["code", "paper"]), st.booleans(),
       st.sampled_from([(1.0, 1.5), (0.5, 1.0), (1.0, 3.0)]))
def test_intact_circuit_gives_the_closed_form_error(y, negatives, weighting, grad_block, margins):
    """eqs. 4-6: the loss and dL/dy from the memory and the intact circuit equal hinge_errors'."""
    m1, m2 = margins
    keys = dict(m1=m1, m2=m2, negatives=negatives, weighting=weighting, grad_block=grad_block, view="none")
    closed = ContrastiveHinge(**keys).error(y)
    circ = ContrastiveHinge(**keys, error_source="circuit").error(y)
    assert torch.allclose(circ.loss, closed.loss, rtol=0, atol=1e-10)
    assert torch.allclose(circ.grad, closed.grad, rtol=0, atol=1e-10)


def _case(B=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    zA = torch.randn(B, d, generator=g, dtype=torch.float64) * 0.35  # distances on both sides of the margins
    return torch.cat([zA, zA + 0.3 * torch.randn(B, d, generator=g, dtype=torch.float64)])


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_a_faulty_circuit_or_memory_gives_another_error(fault):
    """The opposite case of the equality above, for each fault, with gates open on both sides."""
    y = _case()
    for negatives in (0, 3):
        keys = dict(m1=0.5, m2=1.5, negatives=negatives, grad_block=False, view="none")
        closed = ContrastiveHinge(**keys).error(y)
        assert closed.grad[6:].abs().sum() > 0
        assert not torch.allclose(ContrastiveHinge(**keys, error_source="circuit", **fault).error(y).grad, closed.grad)


def _mlp_after(credit, objective, net, x, lr=0.05):
    net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    credit.step(net, x, objective, None, credit.init_state(net), opt)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("fault,grad_block", [({}, False), ({}, True), (FAULTS[0], False), (FAULTS[2], False),
                                              (FAULTS[3], True)], ids=["intact", "intact-block", "inhibition", "graded",
                                                                       "memory-block"])
@pytest.mark.parametrize("negatives", [0, 3])
def test_batched_circuit_equals_the_sequential_presentation_with_the_same_circuit(fault, grad_block, negatives):
    """The batch's presentation sequences run side by side (circuit_hinge_errors) are the sequential mode with
    weights held (credit 'sequential', anchor by anchor through the memory and the circuit), faults included;
    with a fault, both differ from the closed form. (A decaying memory is compared with the gradient block: without
    it the sequential mode replays the anchor's decayed input, the batched form uses the anchor's own row.)"""
    g = torch.Generator().manual_seed(1)
    net = MLP((5, 4, 3), hidden_activation="tanh", output_activation="identity").double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    keys = dict(m1=1.0, m2=3.0, negatives=negatives, grad_block=grad_block, view="none")
    circ = ContrastiveHinge(**keys, error_source="circuit", **fault)
    batched = _mlp_after(Backprop(), circ, net, x)
    assert torch.allclose(batched, _mlp_after(SequentialHinge(hold_weights=True, **fault), ContrastiveHinge(**keys), net, x),
                          rtol=0, atol=1e-10)
    closed = _mlp_after(Backprop(), ContrastiveHinge(**keys), net, x)
    assert torch.allclose(batched, closed, rtol=0, atol=1e-10) == (not fault)


def _conv_training(**keys):
    torch.manual_seed(0)
    d = load_digits()
    x = torch.nn.functional.pad(d.x_train[:60].reshape(-1, 1, 8, 8), (2, 2, 2, 2))
    net = FeedForward((1, 12, 12), [Conv(4, 3, padding=1, pool="max"), Dense(8, bias=False, activation="identity")],
                      hidden_activation="tanh", init="torch", seed=0)
    obj = ContrastiveHinge(negatives=0, grad_block=False, **keys)
    Trainer(net, obj, Backprop(), {"epochs": 1, "batch_size": 20, "optimizer": "adam", "lr": 1e-2, "schedule": "none"},
            seed=0, progress=False).fit(x)
    return [p.detach().clone() for p in net.parameters()]


def test_training_with_the_intact_circuit_gives_the_closed_form_weights():
    """Three Adam steps of a tiny conv net: the same weights with the intact circuit as in closed form; a broken
    inhibitory copy trains another network (the opposite case)."""
    closed = _conv_training()
    initial = FeedForward((1, 12, 12), [Conv(4, 3, padding=1, pool="max"), Dense(8, bias=False, activation="identity")],
                          hidden_activation="tanh", init="torch", seed=0)
    assert not all(torch.equal(a, b) for a, b in zip(closed, initial.parameters()))  # training did something
    for a, b in zip(_conv_training(error_source="circuit"), closed):
        torch.testing.assert_close(a, b)
    broken = _conv_training(error_source="circuit", inhibition_gain=0.7)
    assert not all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(broken, closed))


def test_circuit_keys_need_the_circuit_and_bad_values_name_the_key():
    for key, value in (("inhibition_gain", 0.5), ("graded", True), ("memory_recurrence", 0.2), ("memory_retention", 3.0)):
        with pytest.raises(ParameterError, match=f"{key} applies only with error_source = 'circuit'"):
            ContrastiveHinge(**{key: value})
        assert getattr(ContrastiveHinge(error_source="circuit", **{key: value}), key) == value
    with pytest.raises(ParameterError, match="error_source must be one of 'closed_form', 'circuit'"):
        ContrastiveHinge(error_source="autograd")
    with pytest.raises(ParameterError, match="inhibition_gain"):
        ContrastiveHinge(error_source="circuit", inhibition_gain=-1.0)
    with pytest.raises(ParameterError, match="memory_recurrence"):
        ContrastiveHinge(error_source="circuit", memory_recurrence=2.0)
    y = torch.zeros(4, 3)
    with pytest.raises(ParameterError, match="circuit must be a HingeError"):
        circuit_hinge_errors(y[:2], y[2:], object(), ShortTermMemory())
    with pytest.raises(ParameterError, match="finite"):
        circuit_hinge_errors(y[:2], torch.full((2, 3), float("nan")), HingeError(), ShortTermMemory())
    with pytest.raises(ParameterError, match="negatives"):
        circuit_hinge_errors(y[:2], y[2:], HingeError(), ShortTermMemory(), negatives=1)
    with pytest.raises(ParameterError, match="2B rows"):
        ContrastiveHinge(error_source="circuit").error(torch.zeros(5, 3))


def test_circuit_hinge_errors_with_the_default_objects_is_hinge_errors():
    y = _case(B=5)
    out = circuit_hinge_errors(y[:5], y[5:], HingeError(m1=0.5, m2=1.5), ShortTermMemory(), 0, "code", False)
    ref = hinge_errors(y[:5], y[5:], 0.5, 1.5, "all", "code", False)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(out, ref))


# ----------------------------------------------------------------------------- recipes
RECIPE = """name = "circuit_tiny"
seed = 0
[data]
source = "digits"
train_limit = 120
test_limit = 60
[network]
type = "feedforward"
layers = [{type = "conv", channels = 3, kernel = 3, padding = 1, pool = "max"},
          {type = "dense", units = 6, bias = false, activation = "identity"}]
hidden_activation = "tanh"
output_activation = "identity"
dropout = [0.0, 0.0, 0.0]
init = "torch"
[objective]
type = "contrastive_hinge"
circuits = ["hinge_error"]
error_source = "circuit"
negatives = 3
view = "none"
{extra}
[training]
epochs = 1
batch_size = 30
optimizer = "adam"
lr = 1e-3
schedule = "none"
threads = 0
[eval]
direct_association = false
linear_epochs = 2
untrained_baseline = false
receptive_fields = 0
locality = false
"""


def _recipe(extra: str = "") -> str:
    return RECIPE.replace("{extra}", extra)


def test_recipe_takes_the_circuit_keys_from_the_parameter_set_and_runs(tmp_path):
    r = recipes.resolve(_recipe(""), "t.toml")
    top = {k: v for k, v in circuit_params("hinge_error").items() if not isinstance(v, dict)}
    assert set(top) == {"m1", "m2", "graded", "inhibition_gain"}
    assert {k: r["objective"][k] for k in top} == top and r["objective"]["error_source"] == "circuit"
    assert "spiking" not in r["objective"] and r["objective"]["circuits"] == ["hinge_error"]
    assert recipes.resolve(recipes.dumps(r), "t.toml") == r
    m = run_recipe(r, tmp_path / "run", progress=False, log=lambda s: None)
    assert m["epochs"] == 1 and m["history"][0]["loss"] > 0 and 0 <= m["trained"]["linear"] <= 1
    # the objective's circuit is among the checks a run of this recipe sets up (delivered gate and sign: local)
    (label, factory, n), = [item for item in setup_checkables(r) if item[0] != "step"]
    assert label == "hinge error circuit" and check(factory, n_populations=n, max_examples=6, time_budget_s=5).local
    # the section's own keys win over the set's
    assert recipes.resolve(_recipe("inhibition_gain = 0.5"), "t.toml")["objective"]["inhibition_gain"] == 0.5


def test_recipe_refuses_keys_neither_the_circuit_nor_the_objective_defines(tmp_path):
    with pytest.raises(recipes.RecipeError, match="unknown key 'inhibiton_gain'"):
        recipes.resolve(_recipe("inhibiton_gain = 0.5"), "t.toml")
    with pytest.raises(recipes.RecipeError, match="graded applies only with error_source = 'circuit'"):
        recipes.resolve(_recipe("").replace('error_source = "circuit"', 'graded = true'), "t.toml")
    # a parameter set of one's own: a misspelt top-level key is refused, a sub-table (another realisation's) is not read
    (tmp_path / "bad.toml").write_text("m1 = 0.5\ngradded = true\n[spiking]\ndt = 1e-4\n")
    (tmp_path / "good.toml").write_text("m1 = 0.5\n[spiking]\ndt = 1e-4\n")
    rec = tmp_path / "r.toml"
    rec.write_text(_recipe("").replace('"hinge_error"', '"bad.toml"'))
    with pytest.raises(recipes.RecipeError, match=r"'bad.toml' sets \['gradded'\], which type 'contrastive_hinge' does not take"):
        recipes.resolve(rec.read_text(), str(rec))
    rec.write_text(_recipe("").replace('"hinge_error"', '"good.toml"'))
    assert recipes.resolve(rec.read_text(), str(rec))["objective"]["m1"] == 0.5
    # the same for any section type (here the default objective, the self-defined target, takes k)
    (tmp_path / "kw.toml").write_text("k = 3\n[spiking]\ndt = 1e-4\n")
    rec.write_text("[objective]\ncircuits = ['kw.toml']\n")
    assert recipes.resolve(rec.read_text(), str(rec))["objective"]["k"] == 3


def test_the_e2e_bp_circuit_row_is_e2e_bp_with_the_circuit_as_error_source():
    path = ROOT / "models" / "tang2022" / "e2e_bp_circuit.toml"
    r = recipes.resolve(path.read_text(), str(path))
    base = recipes.resolve((ROOT / "models" / "tang2022" / "e2e_bp.toml").read_text(), "e2e_bp")
    assert r["paper"] == base["paper"] and "circuits" in tomllib.loads(path.read_text())["objective"]
    assert r["objective"]["error_source"] == "circuit" and r["objective"]["circuits"] == ["hinge_error"]
    differ = {k for k in r["objective"] if r["objective"][k] != base["objective"].get(k)}
    assert differ == {"error_source", "circuits"}
    for section in ("data", "network", "credit", "training", "eval"):
        assert r[section] == base[section], section


# ----------------------------------------------------------------------------- locality
def test_circuit_delivered_top_layer_is_catalogued_local_and_the_computed_gate_is_not():
    rows = {(getattr(f, "__name__", ""), local) for f, n, local, kinds in builtin_checks()}
    assert ("_hinge_top_circuit", True) in rows
    r = check(lambda s: hinge_top_checkable(s, sign="circuit"), n_populations=2, max_examples=6, time_budget_s=5)
    assert r.local, str(r)
    r = check(lambda s: hinge_top_checkable(s, sign="circuit", gate="computed"), n_populations=2, max_examples=6,
              time_budget_s=5)
    assert not r.local and "depends on other cells of the layer" in r.kinds
    assert ContrastiveHinge().circuit_checkables() == []
    (label, factory, n), = ContrastiveHinge(error_source="circuit").circuit_checkables()
    assert label == "hinge error circuit" and n == 2
    assert check(factory, n_populations=2, max_examples=6, time_budget_s=5).local
