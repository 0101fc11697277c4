"""The locality checker: every verdict paired with the opposite one, planted violations of each
forbidden kind caught and named, the built-in rules and training steps classified as DESIGN.md says."""

import pytest
import torch

from neurolearn.credit import Backprop, EquilibriumProp
from neurolearn.locality import (CellParam, Cells, Checkable, CheckerError, Contract, Layer, Signal, StateSpec, Weight,
                                 assert_local, assert_nonlocal, check, check_batch_additivity,
                                 check_permutation_equivariance, check_scaling, single_layer)
from neurolearn.objectives import self_defined_delta_checkable
from neurolearn.plasticity import ContrastiveHebbian, Delta, KWTAHebbian

HEBB = Contract("Hebb", allows={"pre", "post"})
WITH_W = Contract("with weight", allows={"pre", "post", "weight"})
KW = dict(max_examples=15)


def hebb(s):
    return s["post"].T @ s["pre"]


def oja(s):
    """User-written Oja rule (Oja 1982): dW_ij = sum_b y_i (x_j - y_i W_ij)."""
    x, y, W = s["pre"], s["post"], s["W"]
    return y.T @ x - (y * y).sum(0)[:, None] * W


def softmax_rule(s):
    """User-written softmax-normalised Hebbian rule: post activity normalised over the layer."""
    p = torch.softmax(s["post"], dim=1)
    return p.T @ s["pre"]


# ----------------------------------------------------------------------------- local controls
def test_hebbian_is_local():
    assert_local(single_layer(hebb, HEBB), **KW)


def test_user_oja_rule_is_local_with_weight_allowed_and_not_without():
    assert_local(single_layer(oja, WITH_W), **KW)
    r = assert_nonlocal(single_layer(oja, HEBB), **KW)
    assert "reads its own weight the contract does not allow" in r.kinds


def test_user_softmax_rule_is_nonlocal():
    r = assert_nonlocal(single_layer(softmax_rule, HEBB), kinds={"depends on other cells of the layer"}, **KW)
    assert any("post[" in v.culprit for v in r.violations)


# ----------------------------------------------------------------------------- planted violations
def test_other_synapse_weight_is_caught():
    def row_normalised(s):
        W = s["W"]
        return s["post"].T @ s["pre"] - W / (W.abs().sum(1, keepdim=True) + 1.0)

    assert_nonlocal(single_layer(row_normalised, WITH_W), kinds={"depends on other synapses' weights"}, **KW)


def test_other_cell_of_the_layer_is_caught_and_named():
    def lateral(s):
        y = s["post"]
        return (y - y.mean(1, keepdim=True)).T @ s["pre"]

    r = assert_nonlocal(single_layer(lateral, HEBB), kinds={"depends on other cells of the layer"}, **KW)
    assert "changed: depends on other cells of the layer" in str(r)


def test_other_layer_weights_is_weight_transport():
    spec = StateSpec({"x": 3, "h": 2, "y": 2}, (Layer("W1", "h", "x"), Layer("W2", "y", "h")),
                     {"x": Cells("x"), "h": Cells("h"), "e": Signal("h", "error"), "W1": Weight("W1"), "W2": Weight("W2")})
    contract = Contract("delta", allows={"pre", "post", "neuron_signal"}, pathways=("error",))

    def fn(s):  # the error delivered to h is read back through W2 (as backprop does)
        back = s["e"] @ s["W2"].T @ s["W2"]
        return {"W1": back.T @ s["x"], "W2": torch.zeros(2, 2, dtype=s["x"].dtype)}

    r = assert_nonlocal(Checkable("planted", spec, {"W1": contract, "W2": contract}, fn), **KW)
    assert "weight transport" in r.kinds and not r.layer_local("W1") and r.layer_local("W2")
    # the same with a declared feedback pathway delivering the signal directly: local
    r = assert_local(Checkable("feedback", spec, {"W1": contract, "W2": contract},
                               lambda s: {"W1": s["e"].T @ s["x"], "W2": torch.zeros(2, 2, dtype=s["x"].dtype)}), **KW)


def test_batch_statistics_are_caught_unless_declared_sequence():
    """Under ``batch="samples"`` a batch mean is caught; ``batch="sequence"`` declares that samples
    interact (running means); the checker takes that declaration as given (see BATCH_MODES)."""
    def centred(s):
        x = s["pre"] - s["pre"].mean(0, keepdim=True)
        return s["post"].T @ x

    r = assert_nonlocal(single_layer(centred, HEBB), kinds={"batch statistics"}, **KW)
    assert "not the sum of per-sample updates" in str(r)
    seq = Contract("sequence", allows={"pre", "post"}, batch="sequence")
    assert_local(single_layer(centred, seq), **KW)


def test_undeclared_pathway_is_caught():
    def fn(s):
        return s["t"].T @ s["pre"]

    declared = Contract("d", allows={"pre", "post", "neuron_signal"}, pathways=("target",))
    undeclared = Contract("u", allows={"pre", "post", "neuron_signal"}, pathways=("feedback B",))
    assert_local(single_layer(fn, declared, signals={"t": "target"}), **KW)
    assert_nonlocal(single_layer(fn, undeclared, signals={"t": "target"}), kinds={"undeclared pathway 'target'"}, **KW)


def test_trace_and_scalar_need_the_contract():
    def fn(s):
        return (s["post"] * s["m"]).T @ s["trace_pre"]

    allowed = Contract("a", allows={"pre", "post", "trace", "global_scalar"})
    assert_local(single_layer(fn, allowed, traces=["trace_pre"], scalars=["m"]), **KW)
    r = assert_nonlocal(single_layer(fn, HEBB, traces=["trace_pre"], scalars=["m"]), **KW)
    assert {"reads a global scalar the contract does not allow", "reads trace activity the contract does not allow"} <= r.kinds


def test_other_cells_parameter_is_caught():
    spec = StateSpec({"pre": 3, "post": 3}, (Layer("W", "post", "pre"),),
                     {"pre": Cells("pre"), "post": Cells("post"), "H": CellParam("post"), "W": Weight("W")})
    own = Checkable("own threshold", spec, {"W": HEBB}, lambda s: {"W": (s["post"] - s["H"]).T @ s["pre"]})
    other = Checkable("rolled threshold", spec, {"W": HEBB},
                      lambda s: {"W": (s["post"] - s["H"].roll(1)).T @ s["pre"]})
    assert_local(own, **KW)
    assert_nonlocal(other, kinds={"depends on other cells of the layer"}, **KW)


def test_zero_gradient_dependency_is_still_caught():
    """A top-k computed from all post cells has zero gradient everywhere: perturbation still finds it."""
    def topk_rule(s):
        y = s["post"]
        d = torch.zeros_like(y).scatter_(1, y.topk(1, dim=1).indices, 1.0)
        return d.T @ s["pre"]

    assert_nonlocal(single_layer(topk_rule, HEBB, n_post=3), kinds={"depends on other cells of the layer"}, **KW)


# ----------------------------------------------------------------------------- built-ins
def test_builtin_rules_are_local():
    for ch in (Delta().checkable(3, 2), ContrastiveHebbian().checkable(3, 2), KWTAHebbian().checkable(3, 2)):
        assert_local(ch, **KW)


def test_homeostasis_batch_mean_is_a_batch_statistic_sequential_mode_is_local():
    """The homeostasis circuit (the real Homeostasis.update, run on drawn states): the mini-batch mean
    is caught as batch statistics; the sequential mode, declared a sequence, is local; under a sequence
    contract the batch mean passes; a planted read of another cell's wins is caught in either mode."""
    from neurolearn.circuits import homeostasis_checkable

    r = assert_nonlocal(lambda s: homeostasis_checkable(s[0], "batch"), n_populations=1, kinds={"batch statistics"}, **KW)
    assert r.layer_local("H") is False
    assert_local(lambda s: homeostasis_checkable(s[0], "sequential"), n_populations=1, **KW)
    batch = homeostasis_checkable(3, "batch")
    seq = Contract("declared sequence", allows={"post", "weight", "neuron_signal"}, pathways=("KWTA",), batch="sequence")
    assert_local(Checkable(batch.name, batch.spec, {"H": seq}, batch.update), **KW)
    ch = homeostasis_checkable(3, "sequential")

    def lateral(s):
        return {"H": ch.update(s)["H"] + s["d"].sum(1).sum() * 0.1}

    assert_nonlocal(Checkable("lateral", ch.spec, ch.contracts, lateral), kinds={"depends on other cells of the layer"}, **KW)


def test_kwta_hebbian_reads_its_own_weight():
    """The opposite verdict: under a contract without ``weight`` the decay term -d_i W_ij is caught."""
    ch = KWTAHebbian().checkable(3, 2)
    no_w = Contract("no weight", allows={"pre", "post", "neuron_signal"}, pathways=("KWTA",))
    r = assert_nonlocal(Checkable(ch.name, ch.spec, {"W": no_w}, ch.update), **KW)
    assert "reads its own weight the contract does not allow" in r.kinds


def test_builtin_rules_nonlocal_when_their_contract_is_narrowed_or_a_term_is_planted():
    """The opposite verdicts for the same rules: Delta's error arrives through a pathway; a contract
    without it makes Delta non-local; ContrastiveHebbian with a planted lateral term is non-local."""
    d = Delta().checkable(3, 2)
    narrowed = Contract("no pathway", allows={"pre", "post"})
    assert_nonlocal(Checkable(d.name, d.spec, {k: narrowed for k in d.contracts}, d.update), **KW)
    ch = ContrastiveHebbian().checkable(3, 2)

    def planted(s):
        out = ch.update(s)
        return {"W": out["W"] + s["post_nudged"].sum(1, keepdim=True).T @ s["pre_free"]}

    assert_nonlocal(Checkable("CH + lateral", ch.spec, ch.contracts, planted),
                    kinds={"depends on other cells of the layer"}, **KW)


def test_an_update_that_raises_is_an_error_not_a_verdict():
    def crashes(s):
        if s["pre"].shape[1] > 1:
            assert False, "my rule is broken"
        return hebb(s)

    with pytest.raises(CheckerError, match="raised AssertionError: my rule is broken"):
        check(lambda sizes: single_layer(crashes, HEBB, n_pre=sizes[0]), n_populations=1, **KW)
    assert check(lambda sizes: single_layer(hebb, HEBB, n_pre=sizes[0]), n_populations=1, **KW).local


def _three_layer_spec():
    pops = {"p0": 2, "p1": 2, "p2": 2, "p3": 2}
    layers = tuple(Layer(f"W{l}", post=f"p{l}", pre=f"p{l - 1}") for l in (1, 2, 3))
    entries = {f"s{i}": Cells(f"p{i}") for i in range(4)} | {f"W{l}": Weight(f"W{l}") for l in (1, 2, 3)}
    return StateSpec(pops, layers, entries)


def test_non_adjacent_layer_weights_and_distant_cells_are_caught_and_named():
    """Planted: W1's update reads W3 (another layer, not the one above: not weight transport) or the
    cells of p3 (neither pre nor post of W1); the unplanted network is local."""
    spec = _three_layer_spec()
    contract = Contract("Hebb", allows={"pre", "post"})
    contracts = {f"W{l}": contract for l in (1, 2, 3)}

    def hebbs(s):
        return {f"W{l}": s[f"s{l}"].T @ s[f"s{l - 1}"] for l in (1, 2, 3)}

    assert_local(Checkable("hebb x3", spec, contracts, hebbs), **KW)

    def reads_w3(s):
        return hebbs(s) | {"W1": s["s1"].T @ s["s0"] * s["W3"].sum()}

    r = assert_nonlocal(Checkable("reads W3", spec, contracts, reads_w3), kinds={"depends on another layer's weights"}, **KW)
    assert any("W of layer W3" in str(v) for v in r.violations)

    def reads_p3(s):
        return hebbs(s) | {"W1": (s["s1"] * s["s3"].sum(1, keepdim=True)).T @ s["s0"]}

    assert_nonlocal(Checkable("reads p3", spec, contracts, reads_p3), kinds={"depends on cells not at the synapse"}, **KW)


def test_equilibrium_propagation_nonlocal_with_a_planted_output_term():
    """The opposite verdict for EP: the hidden layer's update reading the output cells (not at its
    synapses) is caught."""
    ch = EquilibriumProp().checkable((3, 2, 2))

    def planted(s):
        out = ch.update(s)
        out["W1"] = out["W1"] + (s["s1_nudged"] * s["s2_nudged"].sum(1, keepdim=True)).T @ s["s0_free"]
        return out

    assert_nonlocal(Checkable("EP + output term", ch.spec, ch.contracts, planted),
                    kinds={"depends on cells not at the synapse"}, **KW)


def test_checkables_are_the_updates_the_training_steps_make():
    """The written-out updates that the checker judges equal what ``step`` does to the weights:
    Backprop (two layers, MSE mean: dW = -lr 2/(B n) g), SelfDefinedTarget + Delta with the winners of
    the kWTA circuit, and EquilibriumProp's contrastive Hebbian step from the recorded phases."""
    from neurolearn.circuits.kwta import kwta
    from neurolearn.networks import MLP
    from neurolearn.objectives import SelfDefinedTarget, SupervisedTarget

    torch.manual_seed(0)
    x, labels, lr = torch.rand(5, 6), torch.tensor([0, 1, 2, 3, 0]), 0.3
    # backprop, two layers
    net = MLP((6, 5, 4), dropout=(0, 0, 0), seed=2)
    W = [l.weight.detach().clone() for l in net.layers]
    u1 = net.layers[0](x).detach()
    u2 = net.layers[1](torch.relu(u1)).detach()
    d = SupervisedTarget().decide(u2.clamp(0, 1), None, None, labels)
    g = Backprop().checkable((6, 5, 4)).update({"x": x, "u1": u1, "u2": u2, "d": d, "W1": W[0], "W2": W[1]})
    Backprop().step(net, x, SupervisedTarget(), None, {}, torch.optim.SGD(net.parameters(), lr=lr), labels)
    for l in range(2):
        assert torch.allclose(net.layers[l].weight - W[l], -lr * 2 / (5 * 4) * g[f"W{l + 1}"], atol=1e-6)
    # self-defined target: the delivered winners are kWTA(y - H) of the circuit
    net = MLP((6, 7), dropout=(0, 0), seed=3)
    obj = SelfDefinedTarget(k=2, gamma=0.3)
    state = obj.init_state(7)
    state.H.uniform_(-0.2, 0.2)
    H, W0 = state.H.clone(), net.layers[0].weight.detach().clone()
    u = net.layers[0](x).detach()
    winners = kwta(u.clamp(0, 1), 2, H)
    g = self_defined_delta_checkable(6, 7, k=2).update({"x": x, "u": u, "d": winners, "W": W0})
    Backprop().step(net, x, obj, state, {}, torch.optim.SGD(net.parameters(), lr=lr))
    assert torch.allclose(net.layers[0].weight - W0, -lr * 2 / (5 * 7) * g["W"], atol=1e-6)
    # equilibrium propagation: the update from the phases the relaxation produced
    net = MLP((6, 5, 4), hidden_activation="hardsigmoid", dropout=(0, 0, 0), seed=4)
    ep = EquilibriumProp(beta=0.2, free_steps=30, nudged_steps=10, beta_sign="positive")
    W = [l.weight.detach().clone() for l in net.layers]
    free = ep.relax(net, x)
    d = SupervisedTarget().decide(free[-1], None, None, labels)
    nudged = ep.relax(net, x, free, 10, 0.2, d)
    st = {"s0_free": x, "s0_nudged": x, "W1": W[0], "W2": W[1]}
    for i in (1, 2):
        st[f"s{i}_free"], st[f"s{i}_nudged"] = free[i - 1], nudged[i - 1]
    g = ep.checkable((6, 5, 4)).update(st)
    ep.step(net, x, SupervisedTarget(), None, {}, torch.optim.SGD(net.parameters(), lr=lr), labels)
    for l in range(2):
        assert torch.allclose(net.layers[l].weight - W[l], -lr / 5 * g[f"W{l + 1}"], atol=1e-6)


def test_kwta_target_local_only_when_delivered_by_the_circuit():
    assert_local(self_defined_delta_checkable(3, 3, k=1), **KW)

    def self_computed(s):  # the winners computed by the rule itself from every post cell
        u = s["post"]
        d = torch.zeros_like(u).scatter_(1, u.topk(1, dim=1).indices, 1.0)
        return ((u.clamp(0, 1) - d) * ((u > 0) & (u < 1))).T @ s["pre"]

    assert_nonlocal(single_layer(self_computed, Contract("delta", allows={"pre", "post"}), n_post=3),
                    kinds={"depends on other cells of the layer"}, **KW)


def test_two_layer_backprop_is_weight_transport_one_layer_is_local():
    r = assert_nonlocal(lambda s: Backprop().checkable(s), n_populations=3, kinds={"weight transport"}, **KW)
    assert not r.layer_local("W1") and r.layer_local("W2")
    assert_local(lambda s: Backprop().checkable(s), n_populations=2, **KW)


def test_equilibrium_propagation_is_local():
    assert_local(lambda s: EquilibriumProp().checkable(s), n_populations=3, **KW)


def test_report_is_deterministic_under_seed():
    a = check(single_layer(softmax_rule, HEBB), seed=3, **KW)
    b = check(single_layer(softmax_rule, HEBB), seed=3, **KW)
    assert str(a).split("(")[0] == str(b).split("(")[0] and [str(v) for v in a.violations] == [str(v) for v in b.violations]
    assert a.smallest == b.smallest


def test_shrinking_gives_a_small_case():
    """Hypothesis shrinks sizes, batch and the numbers themselves (tests/test_locality_shrink.py for more)."""
    r = check(lambda s: Backprop().checkable(s), n_populations=3, **KW)
    assert r.smallest.startswith("sizes [1, 1, 1], batch 1 -> ")
    assert all(float(v) in (0.0, 1.0, -1.0) for t in r.failing_state.values() for v in t.reshape(-1))


def test_checker_errors_name_the_problem():
    bad_shape = single_layer(lambda s: torch.zeros(5, 5), HEBB)
    with pytest.raises(CheckerError, match="must have shape"):
        check(bad_shape, **KW)
    spec = StateSpec({"a": 2}, (Layer("W", "a", "a"),), {"x": Cells("a"), "W": Weight("W")})
    with pytest.raises(CheckerError, match="no dW for layer 'W'"):
        check(Checkable("missing", spec, {"W": HEBB}, lambda s: {}), **KW)
    with pytest.raises(ValueError, match="allows must be a subset"):
        Contract("x", allows={"telepathy"})


# ----------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("make", [lambda: Delta().checkable(4, 3), lambda: ContrastiveHebbian().checkable(4, 3),
                                  lambda: KWTAHebbian().checkable(4, 3),
                                  lambda: self_defined_delta_checkable(4, 3), lambda: Backprop().checkable((4, 3, 2)),
                                  lambda: EquilibriumProp().checkable((4, 3, 2))])
def test_builtins_permutation_equivariant_and_additive(make):
    ch = make()
    for pop in ch.spec.populations:
        check_permutation_equivariance(ch, pop)
    check_batch_additivity(ch)


def test_invariance_checks_can_fail():
    index_rule = single_layer(lambda s: s["post"].T @ s["pre"] * torch.arange(1, 4, dtype=s["pre"].dtype), HEBB)
    with pytest.raises(AssertionError, match="did not permute"):
        check_permutation_equivariance(index_rule, "pre")
    centred = single_layer(lambda s: s["post"].T @ (s["pre"] - s["pre"].mean(0)), HEBB)
    with pytest.raises(AssertionError, match="batch statistics"):
        check_batch_additivity(centred)


def test_scaling_laws():
    check_scaling(Delta().checkable(3, 2), "x", 3.0, lambda c: c)  # g = e x^T is linear in x
    check_scaling(Delta().checkable(3, 2), "e", -2.0, lambda c: c)
    with pytest.raises(AssertionError, match="did not scale"):
        check_scaling(single_layer(oja, WITH_W), "post", 2.0, lambda c: c)  # Oja is not linear in y


@pytest.mark.parametrize("make,entries,power", [
    (lambda: Delta().checkable(3, 2), ["x"], 1),                                   # g = e x^T: linear in x
    (lambda: Delta().checkable(3, 2), ["e"], 1),                                   # ... and in e
    (lambda: ContrastiveHebbian().checkable(3, 2),
     ["pre_free", "post_free", "pre_nudged", "post_nudged"], 2),                   # products of two states
    (lambda: self_defined_delta_checkable(3, 2), ["x"], 1),                       # delta rule in x
    (lambda: KWTAHebbian().checkable(3, 2), ["x", "W"], 1),                        # d (c x - W): linear in (x, W)
    (lambda: KWTAHebbian().checkable(3, 2), ["d"], 1),                             # ... and in the winners
    (lambda: Backprop().checkable((3, 2, 2)), ["x"], 1),                           # dW1 = e1 x^T (layer W1 only)
    (lambda: EquilibriumProp().checkable((3, 2, 2)),
     ["s0_free", "s1_free", "s2_free", "s0_nudged", "s1_nudged", "s2_nudged"], 2),
])
def test_builtin_scaling_laws(make, entries, power):
    """Scaling laws each built-in's equation implies (scaling every listed entry by c)."""
    ch = make()
    from neurolearn.locality.checker import _call, draw_state

    state = draw_state(ch.spec, 3, {k: "uniform" for k in ch.spec.entries}, 0)
    base = _call(ch, state)
    c = 1.7
    scaled = _call(ch, {k: (v * c if k in entries else v) for k, v in state.items()})
    layers = ["W1"] if "u1" in ch.spec.entries else list(base)
    for layer in layers:
        assert torch.allclose(scaled[layer], base[layer] * c**power, rtol=1e-6, atol=1e-9), layer


def test_public_strategies_draw_valid_states():
    from hypothesis import given, settings

    from neurolearn.locality import strategies as nls

    ch = EquilibriumProp().checkable((3, 2, 2))

    @settings(max_examples=10, deadline=None)
    @given(nls.states(ch.spec))
    def inner(state):
        out = ch.update(state)
        assert set(out) == {"W1", "W2"} and all(torch.isfinite(v).all() for v in out.values())

    inner()

    @settings(max_examples=5, deadline=None)
    @given(nls.checkables(lambda s: Delta().checkable(s[0], s[1]), 2))
    def sized(c):
        assert 1 <= c.spec.populations["pre"] <= 4

    sized()


def test_public_strategies_draw_values_that_shrink():
    """The numbers are Hypothesis' own draws: a property failing for large entries shrinks to a tensor with a
    single large entry (a seed for torch's generator could not shrink like this)."""
    from hypothesis import find, settings

    from neurolearn.locality import strategies as nls

    t = find(nls.values((4, 3)), lambda v: bool((v > 2.5).any()), settings=settings(max_examples=500, database=None))
    assert (t > 2.5).sum() == 1
