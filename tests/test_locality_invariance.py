"""Hypothesis for real: the public strategies draw signed zeros, tiny and large magnitudes and exact ties;
the invariance checks run over drawn states (and permutations), so a law broken only at such values is
caught, shrunk and written out so that it replays."""

import ast
import re

import pytest
import torch
from hypothesis import find, settings

from neurolearn.locality import (
    Contract,
    check_batch_additivity,
    check_permutation_equivariance,
    check_scaling,
    single_layer,
)
from neurolearn.locality import strategies as nls
from neurolearn.locality.checker import CheckerError

HEBB = Contract("Hebb", allows={"pre", "post"})
FIND = settings(max_examples=300, database=None)


@pytest.mark.parametrize("name,condition", [
    ("-0.0", lambda v: bool(((v == 0) & torch.signbit(v)).any())),
    ("tiny", lambda v: bool(((v.abs() > 0) & (v.abs() <= nls.TINY)).any())),
    ("large", lambda v: bool((v.abs() >= nls.LARGE).any())),
    ("ties", lambda v: v.unique().numel() < v.numel() and bool((v != 0).all())),
])
def test_strategies_reach_the_special_values(name, condition):
    t = find(nls.values((3,)), condition, settings=FIND)
    assert condition(t) and t.dtype == torch.float64


def test_a_fixed_style_draws_only_its_values():
    t = find(nls.values((4,), styles=("zeros",)), lambda v: True, settings=FIND)
    assert (t == 0).all()
    with pytest.raises(CheckerError, match="style must be None"):
        check_batch_additivity(single_layer(lambda s: s["post"].T @ s["pre"], HEBB), style="gaussian")


def first_winner(s):
    """Hebbian update of the single winner of each sample, argmax taking the *first* of tied cells:
    equivariant except at exact ties (the index decides)."""
    y = s["post"]
    win = torch.zeros_like(y).scatter_(1, y.argmax(1, keepdim=True), 1.0)
    return win.T @ s["pre"]


def mean_when_large(s):
    """Hebbian, but subtracts the batch mean of pre when an input exceeds 1e3 (a 'safety' normalisation):
    additive except at large magnitudes."""
    x = s["pre"]
    if x.abs().max() > 1e3:
        x = x - x.mean(0, keepdim=True)
    return s["post"].T @ x


def _replay(message: str, ch) -> dict:
    """The state written out in an AssertionError, parsed back into tensors."""
    written = message.split("state: ", 1)[1]
    return {k: torch.tensor(ast.literal_eval(v), dtype=torch.float64)
            for k, v in re.findall(r"(\w+) = (\[.*?\](?=; |$))", written)}


def test_permutation_caught_only_over_drawn_ties_and_the_example_replays():
    ch = single_layer(first_winner, HEBB, n_post=3)
    check_permutation_equivariance(ch, "post", style="normal")  # distinct values: equivariant
    with pytest.raises(AssertionError, match="did not permute") as info:
        check_permutation_equivariance(ch, "post")  # drawn ties
    state = _replay(str(info.value), ch)
    post = state["post"]
    assert any(row.unique().numel() < row.numel() for row in post)  # the shrunk example has a tie
    order = [int(v) for v in re.search(r"by \[([\d, ]+)\]", str(info.value)).group(1).split(", ")]
    perm = torch.tensor(order)
    from neurolearn.locality import permute_state

    moved = ch.update(permute_state(ch, state, "post", perm))["W"]
    assert not torch.equal(moved, ch.update(state)["W"][perm])  # it replays


def test_batch_additivity_caught_only_over_drawn_large_values_and_the_example_replays():
    ch = single_layer(mean_when_large, HEBB)
    check_batch_additivity(ch, style="normal")
    with pytest.raises(AssertionError, match="batch statistics") as info:
        check_batch_additivity(ch)
    state = _replay(str(info.value), ch)
    assert state["pre"].abs().max() > 1e3 and state["pre"].shape[0] >= 2
    parts = sum(ch.update({k: v[b:b + 1] if k != "W" else v for k, v in state.items()})["W"]
                for b in range(state["pre"].shape[0]))
    assert not torch.allclose(parts, ch.update(state)["W"])


def test_scaling_over_drawn_states_both_ways():
    hebb = single_layer(lambda s: s["post"].T @ s["pre"], HEBB)
    check_scaling(hebb, "pre", -3.0, lambda c: c, style=None)  # linear at every drawn value, -0.0 and 1e4 included
    relu = single_layer(lambda s: s["post"].T @ torch.relu(s["pre"]), HEBB)
    check_scaling(relu, "pre", 2.0, lambda c: c)  # positively homogeneous on uniform [0, 1] inputs
    with pytest.raises(AssertionError, match="did not scale"):
        check_scaling(relu, "pre", -1.0, lambda c: c, style=None)  # but not for negative factors


def test_invariances_hold_at_special_values_for_a_local_rule():
    oja = single_layer(lambda s: s["post"].T @ s["pre"] - (s["post"] ** 2).sum(0)[:, None] * s["W"],
                       Contract("Oja", allows={"pre", "post", "weight"}), n_pre=3, n_post=3)
    for pop in ("pre", "post"):
        check_permutation_equivariance(oja, pop, style=("extreme", "mixed", "zeros"))
    check_batch_additivity(oja, style=("extreme", "mixed"))
    with pytest.raises(CheckerError, match="max_examples must be an integer"):
        check_batch_additivity(oja, max_examples=0)


def test_the_checkers_smallest_failing_state_is_written_out_and_replays():
    from neurolearn.locality import check
    from neurolearn.locality.checker import violations_in

    def other_cell(s):  # each post cell's update also reads post cell 0
        return (s["post"] + s["post"][:, :1]).T @ s["pre"]

    ch = single_layer(other_cell, HEBB, n_post=3)
    r = check(ch, max_examples=8)
    assert not r.local and r.failing_state and "its values: pre = [[" in str(r)
    batch = r.failing_state["pre"].shape[0]
    found = violations_in(ch, r.failing_state, batch, 6, torch.Generator().manual_seed(0))
    assert "depends on other cells of the layer" in {v.kind for v in found}
    assert not check(single_layer(lambda s: s["post"].T @ s["pre"], HEBB), max_examples=3).failing_state
