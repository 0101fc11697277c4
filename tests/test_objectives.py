"""Objectives, kWTA and homeostasis against their equations (Liu et al. 2024, Eqs. 1, 2, 11-13)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from neurolearn.circuits import KWTA, Homeostasis, kwta
from neurolearn.objectives import SelfDefinedTarget, SupervisedTarget


@st.composite
def _scores(draw):
    """Drive ``v`` (b, n), thresholds ``H`` (n,) and ``k``: values drawn by Hypothesis (so a failure shrinks
    to the numbers), from a few levels half of the time so that exact ties between scores are common."""
    b, n = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    if draw(st.booleans()):
        el = st.sampled_from([0.0, 0.25, 0.5, 1.0])  # ties
    else:
        el = st.floats(-10, 10, allow_nan=False, width=32)
    v = torch.tensor(draw(st.lists(st.lists(el, min_size=n, max_size=n), min_size=b, max_size=b)))
    H = torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.5]) if draw(st.booleans()) else el, min_size=n, max_size=n)))
    return v, H, draw(st.integers(1, n))


@settings(max_examples=80, deadline=None)
@given(_scores())
def test_kwta_selects_exactly_the_k_largest(case):
    """Exactly k winners per row, none of whose scores v - H is below a loser's (ties may go either way)."""
    v, H, k = case
    d = kwta(v, k, H)
    assert (d.sum(1) == k).all()
    score = v - H
    for row, drow in zip(score, d):
        winners = row[drow == 1]
        losers = row[drow == 0]
        if len(losers):
            assert winners.min() >= losers.max()


def test_kwta_errors_name_k():
    with pytest.raises(ValueError, match="k"):
        kwta(torch.rand(2, 3), 4)
    with pytest.raises(ValueError, match="k"):
        KWTA(0)
    with pytest.raises(ValueError, match="k must be <="):
        KWTA(5)(torch.rand(2, 3))


def test_homeostasis_batch_equation():
    h = Homeostasis(4, gamma=0.5, target=0.25)
    d = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    h.update(d)
    assert torch.allclose(h.H, 0.5 * (d.mean(0) - 0.25))


def test_homeostasis_sequential_equation():
    h = Homeostasis(3, gamma=1.0, target=1 / 3, mode="sequential", eta=0.5)
    A, H = torch.full((3,), 1 / 3), torch.zeros(3)
    rows = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    for r in rows:
        A = 0.5 * r + 0.5 * A
        H = H + (A - 1 / 3)
    h.update(rows)
    assert torch.allclose(h.H, H)
    h.reset()
    assert (h.H == 0).all()


def test_self_defined_target_updates_h_and_winners_rotate():
    obj = SelfDefinedTarget(k=1, gamma=1.0)
    st_ = obj.init_state(3)
    y = torch.tensor([[0.9, 0.5, 0.1]])
    winners = [obj.decide(y, st_).argmax().item() for _ in range(6)]
    assert len(set(winners)) > 1  # homeostasis raises the threshold of the cell that keeps winning


def test_self_defined_target_masks_and_smooths():
    obj = SelfDefinedTarget(k=2, gamma=0.0, smoothing=0.3)
    y = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    d = obj.decide(y * mask, obj.init_state(4, 0.2), mask)
    base = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(d, (0.7 * base + 0.3 * 2 / 4) * mask)


def test_sequential_mode_uses_h_of_previous_sample():
    obj = SelfDefinedTarget(k=1, gamma=10.0, mode="sequential", eta=1.0)
    y = torch.tensor([[0.9, 0.5], [0.9, 0.5]])
    d = obj.decide(y, obj.init_state(2))
    assert d[0].argmax() == 0 and d[1].argmax() == 1  # the first winner's H blocks it for the second


def test_target_activity_dropout_adjustment():
    assert SelfDefinedTarget(k=6, dropout_target="multiply").target_activity(2000, 0.2) == pytest.approx(0.8 * 6 / 2000)
    assert SelfDefinedTarget(k=5, dropout_target="divide").target_activity(2000, 0.2) == pytest.approx(5 / (0.8 * 2000))
    assert SelfDefinedTarget(k=5, dropout_target="none").target_activity(2000, 0.2) == pytest.approx(5 / 2000)


@pytest.mark.parametrize("kw,name", [({"k": 0}, "k"), ({"gamma": -1}, "gamma"), ({"mode": "online"}, "mode"),
                                     ({"smoothing": 1.0}, "smoothing"), ({"eta": 0.0}, "eta"),
                                     ({"k": 2.5}, "k"), ({"reset_each_epoch": 1}, "reset_each_epoch")])
def test_self_defined_parameter_errors(kw, name):
    with pytest.raises(ValueError, match=f"SelfDefinedTarget: {name} must be"):
        SelfDefinedTarget(**kw)


def test_k_larger_than_layer_is_rejected():
    with pytest.raises(ValueError, match="k must be <= the number of output cells"):
        SelfDefinedTarget(k=10).init_state(5)


def test_objectives_are_immutable():
    import dataclasses

    obj = SelfDefinedTarget()
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.k = 3
    assert obj.k == 6


def test_supervised_target():
    d = SupervisedTarget(smoothing=0.1).decide(torch.zeros(2, 4), labels=torch.tensor([1, 3]))
    assert torch.allclose(d[0], torch.tensor([0.025, 0.925, 0.025, 0.025]))
    with pytest.raises(ValueError, match="labels"):
        SupervisedTarget().decide(torch.zeros(2, 4))


def test_shipped_circuit_parameter_sets_build_valid_circuits():
    from neurolearn.circuits import circuit_params

    k = circuit_params("kwta")["k"]
    assert KWTA(k).k == k
    h = circuit_params("homeostasis")
    Homeostasis(2000, h["gamma"], k / 2000, h["mode"], h["eta"])
    with pytest.raises(ValueError, match="name must be one of"):
        circuit_params("nope")


def test_recipes_take_their_defaults_from_the_circuit_parameter_sets(tmp_path):
    """``circuits = [...]`` in a section fills the keys of circuits/<name>.toml that the section does not set;
    the section's own keys win; a set with keys the type does not take is an error naming them."""
    from neurolearn import recipe as recipes
    from neurolearn.circuits import circuit_params

    r = recipes.resolve("[objective]\ncircuits = ['kwta', 'homeostasis']\n", "t")
    assert r["objective"]["k"] == circuit_params("kwta")["k"] and r["objective"]["gamma"] == circuit_params("homeostasis")["gamma"]
    r = recipes.resolve("[objective]\ncircuits = ['kwta']\nk = 2\n", "t")
    assert r["objective"]["k"] == 2
    own = tmp_path / "mine.toml"
    own.write_text("k = 9\n")
    rec = tmp_path / "r.toml"
    rec.write_text("[objective]\ncircuits = ['mine.toml']\n")
    assert recipes.resolve(rec.read_text(), str(rec))["objective"]["k"] == 9
    with pytest.raises(recipes.RecipeError, match="'kwta' sets \\['k'\\], which type 'backprop' does not take"):
        recipes.resolve("[credit]\ncircuits = ['kwta']\n", "t")
    with pytest.raises(recipes.RecipeError, match="name must be one of"):
        recipes.resolve("[objective]\ncircuits = ['nope']\n", "t")
