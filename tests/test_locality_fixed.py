"""Fixed matrices as a declared pathway: whole training steps of feedback alignment checked as one
function (feedback computed inside), against backprop and sign-symmetric feedback (weight transport)
and against a contract that does not declare the fixed pathway."""

import pytest
import torch

from neurolearn.locality import (
    Cells,
    Checkable,
    CheckerError,
    Contract,
    Fixed,
    Layer,
    Signal,
    StateSpec,
    Weight,
    assert_local,
    assert_nonlocal,
    check,
    check_permutation_equivariance,
    fixed_reach,
)
from neurolearn.locality.contract import ParameterError

KW = {"max_examples": 15}
TARGET = Contract("output: delta rule", allows={"pre", "post", "neuron_signal"}, pathways=("target",))
FEEDBACK = Contract("hidden: feedback B2", allows={"pre", "post", "neuron_signal"}, pathways=("feedback B2",))


def _relu_prime(u):
    return (u > 0).to(u.dtype)


def two_layer_step(feedback: str, sizes=(3, 2, 2), hidden_contract: Contract = FEEDBACK) -> Checkable:
    """A whole two-layer training step, the hidden error computed inside the checked function:

        e2 = (sigmoid(u2) - d) * sigmoid'(u2),   dW2 = e2^T relu(u1)
        e1 = (e2 F) * relu'(u1),                 dW1 = e1^T x

    with ``F = B2`` (a fixed random matrix: feedback alignment, Lillicrap et al. 2016), ``F = W2``
    (backprop: weight transport) or ``F = sign(W2)`` (sign-symmetric feedback, Liao et al. 2016).
    """
    n0, n1, n2 = sizes
    spec = StateSpec({"p0": n0, "p1": n1, "p2": n2}, (Layer("W1", "p1", "p0"), Layer("W2", "p2", "p1")),
                     {"x": Cells("p0"), "u1": Cells("p1", "current"), "u2": Cells("p2", "current"),
                      "d": Signal("p2", "target"), "W1": Weight("W1"), "W2": Weight("W2"),
                      "B2": Fixed("feedback B2", post="p2", pre="p1")})

    def fn(s):
        y = torch.sigmoid(s["u2"])
        e2 = (y - s["d"]) * y * (1 - y)
        F = {"fixed": s["B2"], "transport": s["W2"], "sign": torch.sign(s["W2"])}[feedback]
        e1 = (e2 @ F) * _relu_prime(s["u1"])
        return {"W1": e1.T @ s["x"], "W2": e2.T @ torch.relu(s["u1"])}

    return Checkable(f"two-layer step ({feedback} feedback)", spec, {"W1": hidden_contract, "W2": TARGET}, fn)


def test_feedback_alignment_whole_step_is_local():
    r = assert_local(lambda s: two_layer_step("fixed", s), n_populations=3, **KW)
    assert r.layer_local("W1") and r.layer_local("W2")


def test_backprop_whole_step_is_weight_transport():
    r = assert_nonlocal(lambda s: two_layer_step("transport", s), n_populations=3, kinds={"weight transport"}, **KW)
    assert not r.layer_local("W1") and r.layer_local("W2")
    assert any("W of layer W2" in v.culprit for v in r.violations)


def test_sign_symmetric_feedback_is_weight_transport():
    assert_nonlocal(lambda s: two_layer_step("sign", s), n_populations=3, kinds={"weight transport"}, **KW)


def test_fixed_matrix_under_a_contract_without_its_pathway_is_named():
    other = Contract("hidden: other pathway", allows={"pre", "post", "neuron_signal"}, pathways=("feedback C",))
    r = assert_nonlocal(lambda s: two_layer_step("fixed", s, other), n_populations=3,
                        kinds={"undeclared pathway 'feedback B2'"}, **KW)
    assert not r.layer_local("W1") and r.layer_local("W2")
    # without the pathway the output cells do not reach the hidden cells either
    assert "depends on cells not at the synapse" in r.kinds
    plain = Contract("hidden: pre, post", allows={"pre", "post"})
    assert_nonlocal(two_layer_step("fixed", (3, 2, 2), plain), kinds={"undeclared pathway 'feedback B2'"}, **KW)


def test_feedback_to_another_hidden_cell_is_caught():
    """B2 delivers column i to hidden cell i; a step reading another column (rolled) is non-local."""
    ch = two_layer_step("fixed", (3, 3, 2))

    def rolled(s):
        out = ch.update(s)
        y = torch.sigmoid(s["u2"])
        e2 = (y - s["d"]) * y * (1 - y)
        e1 = (e2 @ s["B2"].roll(1, dims=1)) * _relu_prime(s["u1"])
        return {"W1": e1.T @ s["x"], "W2": out["W2"]}

    r = assert_nonlocal(Checkable("rolled feedback", ch.spec, ch.contracts, rolled),
                        kinds={"depends on other cells of the layer"}, **KW)
    assert any("fixed matrix B2" in v.culprit for v in r.violations)


def test_three_layer_feedback_alignment_and_direct_feedback_alignment():
    """Three layers: FA chains B3 then B2 (the hidden-1 contract declares both); DFA sends the output
    error to every hidden layer through its own fixed matrix. Both local; the same FA step with a
    contract declaring only B2 names the undeclared B3."""
    pops = {"p0": 3, "p1": 2, "p2": 2, "p3": 2}
    layers = tuple(Layer(f"W{l}", f"p{l}", f"p{l - 1}") for l in (1, 2, 3))
    base = {"x": Cells("p0")} | {f"u{l}": Cells(f"p{l}") for l in (1, 2, 3)} | {"d": Signal("p3", "target")}
    base |= {f"W{l}": Weight(f"W{l}") for l in (1, 2, 3)}

    def contract(*paths):
        return Contract("+".join(paths), allows={"pre", "post", "neuron_signal"}, pathways=paths)

    fa = StateSpec(pops, layers, base | {"B2": Fixed("fb B2", "p2", "p1"), "B3": Fixed("fb B3", "p3", "p2")})

    def fa_fn(s):
        e3 = torch.sigmoid(s["u3"]) - s["d"]
        e2 = (e3 @ s["B3"]) * _relu_prime(s["u2"])
        e1 = (e2 @ s["B2"]) * _relu_prime(s["u1"])
        h = [s["x"], torch.relu(s["u1"]), torch.relu(s["u2"])]
        return {"W1": e1.T @ h[0], "W2": e2.T @ h[1], "W3": e3.T @ h[2]}

    good = {"W1": contract("fb B2", "fb B3"), "W2": contract("fb B3"), "W3": contract("target")}
    assert_local(Checkable("FA 3 layers", fa, good, fa_fn), **KW)
    short = dict(good, W1=contract("fb B2"))
    assert_nonlocal(Checkable("FA 3 layers, B3 undeclared", fa, short, fa_fn), kinds={"undeclared pathway 'fb B3'"}, **KW)
    assert fixed_reach(fa, "W1", good["W1"]).populations == {"p2", "p3"}

    dfa = StateSpec(pops, layers, base | {"D1": Fixed("direct D1", "p3", "p1"), "D2": Fixed("direct D2", "p3", "p2")})

    def dfa_fn(s):
        e3 = torch.sigmoid(s["u3"]) - s["d"]
        e2 = (e3 @ s["D2"]) * _relu_prime(s["u2"])
        e1 = (e3 @ s["D1"]) * _relu_prime(s["u1"])
        h = [s["x"], torch.relu(s["u1"]), torch.relu(s["u2"])]
        return {"W1": e1.T @ h[0], "W2": e2.T @ h[1], "W3": e3.T @ h[2]}

    dfa_contracts = {"W1": contract("direct D1"), "W2": contract("direct D2"), "W3": contract("target")}
    assert_local(Checkable("DFA 3 layers", dfa, dfa_contracts, dfa_fn), **KW)

    def dfa_reads_w3(s):  # the output error carried back through W3 (transpose of the forward weights)
        out = dfa_fn(s)
        e3 = torch.sigmoid(s["u3"]) - s["d"]
        return out | {"W2": ((e3 @ s["W3"]) * _relu_prime(s["u2"])).T @ torch.relu(s["u1"])}

    assert_nonlocal(Checkable("DFA with W3", dfa, dfa_contracts, dfa_reads_w3), kinds={"weight transport"}, **KW)


def test_fixed_lateral_matrix_delivers_other_cells_only_when_declared():
    """A fixed lateral matrix (both ends the post population) delivers the other post cells to cell i."""
    spec = StateSpec({"pre": 3, "post": 3}, (Layer("W", "post", "pre"),),
                     {"pre": Cells("pre"), "post": Cells("post"), "L": Fixed("lateral", "post", "post")})

    def inhibited(s):
        return {"W": (s["post"] - s["post"] @ s["L"].T).T @ s["pre"]}

    lateral = Contract("lateral", allows={"pre", "post", "neuron_signal"}, pathways=("lateral",))
    assert_local(Checkable("fixed lateral inhibition", spec, {"W": lateral}, inhibited), **KW)
    assert_nonlocal(Checkable("undeclared lateral", spec, {"W": Contract("hebb", allows={"pre", "post"})}, inhibited),
                    kinds={"undeclared pathway 'lateral'", "depends on other cells of the layer"}, **KW)


def test_fixed_is_permuted_with_its_populations_and_validated():
    ch = two_layer_step("fixed", (3, 3, 2))
    for pop in ("p0", "p1", "p2"):
        check_permutation_equivariance(ch, pop)
    with pytest.raises(ParameterError, match="fixed matrix 'B' names unknown population 'p9'"):
        StateSpec({"p0": 2}, (), {"B": Fixed("fb", "p9", "p0")})
    with pytest.raises(ParameterError, match="must be one of Cells"):
        StateSpec({"p0": 2}, (), {"B": "not an entry"})
    assert check(ch, **KW).local and not check(two_layer_step("transport", (3, 3, 2)), **KW).local


def test_checker_error_for_bad_fixed_shape_is_not_a_verdict():
    ch = two_layer_step("fixed")

    def wrong(s):
        return {"W1": s["B2"], "W2": ch.update(s)["W2"]}  # (2, 2) but W1 is (2, 3)

    with pytest.raises(CheckerError, match="must have shape"):
        check(Checkable("wrong", ch.spec, ch.contracts, wrong), **KW)


def test_the_multi_layer_example_in_the_docs_runs():
    """docs/locality.md's feedback-alignment example (its assertions: FA local, BP and sign-symmetric not)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "locality.md").read_text()
    start = text.index("import torch\nfrom neurolearn.locality import (Cells")
    exec(text[start:text.index("```", start)], {})  # noqa: S102 - the documented example, run as written
