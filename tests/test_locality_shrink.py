"""Hypothesis for real in the checker's own search: every number of a searched state is a Hypothesis
draw (biased towards 0.0, -0.0, tiny and large magnitudes and ties: counted, not assumed), so a failing
state shrinks -- sizes, batch and numbers -- to a small readable example that commits the same violation
kind, is printed in full and replays; the invariance checks draw their permutations and splits."""

import pytest
import torch

from neurolearn.credit import Backprop
from neurolearn.locality import (
    Contract,
    assert_local,
    assert_nonlocal,
    check,
    check_batch_additivity,
    check_permutation_equivariance,
    single_layer,
)
from neurolearn.locality import strategies as nls

HEBB = Contract("Hebb", allows={"pre", "post"})
OTHER = "depends on other cells of the layer"


def hebb(s):
    return s["post"].T @ s["pre"]


def other_cell(s):
    """Planted: each post cell's update also reads post cell 0."""
    return (s["post"] + s["post"][:, :1]).T @ s["pre"]


def lateral_when(condition):
    """Hebbian, plus the summed activity of the other post cells when ``condition(pre)`` holds somewhere
    (a dependency the checker sees only in states holding such a number)."""
    def fn(s):
        x, y = s["pre"], s["post"]
        gate = condition(x).any().to(x.dtype)
        return y.T @ x + gate * (y.sum(1, keepdim=True) - y).T @ x
    return fn


def sized(fn):
    return lambda s: single_layer(fn, HEBB, n_pre=s[0], n_post=s[1])


def _simple(state) -> bool:
    return all(float(v) in (0.0, 1.0, -1.0) for t in state.values() for v in t.reshape(-1))


def test_a_planted_rule_shrinks_to_a_minimal_state_that_replays():
    """Reading another post cell needs two post cells, one pre cell, one sample and one nonzero input:
    that is what the shrink reaches (sizes and numbers), at every seed."""
    for seed in range(3):
        r = check(sized(other_cell), n_populations=2, seed=seed, max_examples=15)
        assert r.failing_sizes == [1, 2] and r.smallest.startswith("sizes [1, 2], batch 1 -> ")
        assert r.failing_violation.kind == OTHER
        assert _simple(r.failing_state) and sum(int((v != 0).sum()) for v in r.failing_state.values()) <= 2
        assert [v.kind for v in r.replay(sized(other_cell))] == [OTHER]
        printed = str(r).split("its values: ")[1].split("\n")[0]
        parsed = nls.parse(printed)
        assert parsed.keys() == r.failing_state.keys()
        assert all(torch.equal(parsed[k], r.failing_state[k]) for k in parsed)
        assert [v.kind for v in r.replay(sized(other_cell), parsed)] == [OTHER]  # the printed example replays


def test_the_shrink_keeps_the_violation_kind_and_a_local_rule_does_not_replay_it():
    many = single_layer(lambda s: (s["post"] * s["m"]).T @ (s["pre"] - s["pre"].mean(0, keepdim=True)) + 0.1 * s["W"],
                        HEBB, n_post=3, scalars=["m"])
    r = check(many, max_examples=15)
    assert len(r.kinds) >= 3  # several kinds named by the search ...
    kind = r.failing_violation.kind
    assert {v.kind for v in r.replay(many)} == {kind}  # ... the shrunk state commits the one it shrank for
    clean = single_layer(hebb, HEBB, n_post=3, scalars=["m"])
    assert r.replay(clean) == []  # the same state under a local rule: nothing found


def test_backprop_shrinks_to_one_cell_per_population_with_simple_numbers():
    r = check(lambda s: Backprop().checkable(s), n_populations=3, max_examples=10)
    assert r.failing_sizes == [1, 1, 1] and r.smallest.startswith("sizes [1, 1, 1], batch 1 -> ")
    assert _simple(r.failing_state)
    assert r.replay(lambda s: Backprop().checkable(s))


def test_special_values_are_drawn_over_a_run():
    """Counted over the searched states of one run: zeros of both signs, tiny and large magnitudes, ties --
    at every seed tried, in float64 and in float16 (whose specials are its own)."""
    for seed in range(3):
        for dtype in (torch.float64, torch.float16):
            r = check(sized(hebb), n_populations=2, seed=seed, max_examples=25, dtype=dtype)
            assert r.local and r.examples == 25
            assert set(r.special_values) == {"0.0", "-0.0", "tiny", "large", "ties"}
            assert all(n > 0 for n in r.special_values.values()), (seed, dtype, r.special_values)


def test_special_counts_counts_and_does_not_invent():
    state = {"a": torch.tensor([[0.0, -0.0, 1e-30]]), "b": torch.tensor([2.0, 2.0, 1e4])}
    assert nls.special_counts(state, torch.float64) == {"0.0": 1, "-0.0": 1, "tiny": 1, "large": 1, "ties": 1}
    plain = {"a": torch.tensor([[0.5, -1.5, 2.0]])}
    assert nls.special_counts(plain, torch.float64) == {"0.0": 0, "-0.0": 0, "tiny": 0, "large": 0, "ties": 0}


@pytest.mark.parametrize("name,condition", [
    ("-0.0", lambda x: (x == 0) & torch.signbit(x)),
    ("large", lambda x: x.abs() >= 1e4),
    ("tiny", lambda x: (x != 0) & (x.abs() <= 1e-20)),
])
def test_a_dependency_only_at_special_values_is_caught(name, condition):
    """Reads other cells only when an input is -0.0 / large / tiny: caught (the drawn states hold such
    numbers; 60 states make a miss unlikely at any seed), the shrunk state replays; plain Hebbian is local."""
    r = assert_nonlocal(sized(lateral_when(condition)), n_populations=2, kinds={OTHER}, max_examples=60)
    assert r.failing_violation.kind in {OTHER, "batch statistics"}
    assert r.replay(sized(lateral_when(condition)))
    if name == "large":  # no perturbation makes 1e4 out of the drawn numbers: the example must hold one
        assert bool(condition(r.failing_state["pre"]).any()) and r.failing_sizes == [1, 2]
    assert_local(sized(hebb), n_populations=2, max_examples=60)


def test_the_shrunk_example_is_the_same_for_the_same_seed():
    a = check(sized(other_cell), n_populations=2, seed=4, max_examples=10)
    b = check(sized(other_cell), n_populations=2, seed=4, max_examples=10)
    assert a.smallest == b.smallest and a.failing_state.keys() == b.failing_state.keys()
    assert all(torch.equal(a.failing_state[k], b.failing_state[k]) for k in a.failing_state)


def test_no_shrink_when_asked_and_the_search_state_still_replays():
    r = check(sized(other_cell), n_populations=2, max_examples=10, max_shrink_calls=0)
    assert r.shrink_calls == 0 and r.failing_state and r.replay(sized(other_cell))
    with pytest.raises(ValueError, match="max_shrink_calls must be an integer >= 0"):
        check(sized(other_cell), n_populations=2, max_shrink_calls=-1)
    with pytest.raises(ValueError, match="no failing state"):
        check(sized(hebb), n_populations=2, max_examples=3).replay(sized(hebb))


# ----------------------------------------------------------------------------- drawn invariances
OJA = single_layer(lambda s: s["post"].T @ s["pre"] - (s["post"] ** 2).sum(0)[:, None] * s["W"],
                   Contract("Oja", allows={"pre", "post", "weight"}), n_pre=3, n_post=3)


def test_permutation_checks_receive_different_drawn_permutations():
    drawn = check_permutation_equivariance(OJA, "post", max_examples=20)
    assert drawn.examples >= 20 and len(drawn.draws) == drawn.examples
    assert all(sorted(p) == [0, 1, 2] for p in drawn.draws)
    assert len({tuple(p) for p in drawn.draws}) >= 3  # not one fixed permutation


def test_additivity_checks_receive_different_drawn_splits():
    drawn = check_batch_additivity(OJA, max_examples=20)
    splits = {tuple(p) for p in drawn.draws}
    assert len(splits) >= 3
    assert any(len(set(p)) > 1 for p in splits)  # the batch really split in parts
    assert any(len(p) > 1 and len(set(p)) < len(p) for p in splits)  # parts of several samples too


def test_a_rule_treating_one_cell_apart_breaks_permutation_and_is_caught():
    """Post cell 0 learns twice as fast (an index, not a signal, decides): not equivariant; the shrunk
    permutation moves cell 0."""
    apart = single_layer(lambda s: hebb(s) * torch.tensor([[2.0], [1.0], [1.0]], dtype=s["pre"].dtype), HEBB, n_post=3)
    check_permutation_equivariance(apart, "pre")  # the pre cells are treated alike
    with pytest.raises(AssertionError, match=r"did not permute dW") as info:
        check_permutation_equivariance(apart, "post")
    order = [int(v) for v in str(info.value).split("by [")[1].split("]")[0].split(", ")]
    assert order[0] != 0


def test_a_rule_additive_per_sample_but_not_over_parts_is_caught():
    """The update of a batch of two or more samples doubles (a batch-size gain): every per-sample update
    is right, the sum over a drawn split of the batch is not."""
    gain = single_layer(lambda s: hebb(s) * (2.0 if s["pre"].shape[0] > 1 else 1.0), HEBB)
    check_batch_additivity(gain, batch=1)  # one sample: nothing to split
    with pytest.raises(AssertionError, match="batch statistics"):
        check_batch_additivity(gain)


def test_the_documented_replay_example_runs():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "locality.md").read_text()
    start = doc.index("# Replaying a printed example")
    exec(doc[start:doc.index("```", start)], {})  # noqa: S102 - the documented example, its asserts are the test
