"""Complete reports: the checker keeps searching after the first violation, so every kind a rule
commits is named whatever the seed; a failing state is still shrunk."""

import pytest
import torch

from neurolearn.credit import Backprop
from neurolearn.locality import (
    Cells,
    Checkable,
    Contract,
    Layer,
    StateSpec,
    Weight,
    assert_local,
    assert_nonlocal,
    check,
    single_layer,
)

SEEDS = range(5)
KW = {"max_examples": 15}
SEARCH = {**KW, "max_shrink_calls": 0}  # the search alone (completeness); shrinking: tests/test_locality_shrink.py
HEBB = Contract("Hebb", allows={"pre", "post"})


def many_kinds(s):
    """Planted: reads another post cell (top-1 winner, zero gradient), its own weight, a scalar and a
    batch mean -- four kinds at once, some visible only in some states."""
    y, x, W = s["post"], s["pre"], s["W"]
    win = torch.zeros_like(y).scatter_(1, y.topk(1, dim=1).indices, 1.0)
    return (win * s["m"]).T @ (x - x.mean(0, keepdim=True)) + 0.1 * W


MANY = {"depends on other cells of the layer", "reads its own weight the contract does not allow",
        "reads a global scalar the contract does not allow", "batch statistics"}


@pytest.mark.parametrize("seed", SEEDS)
def test_every_planted_kind_is_named_at_every_seed(seed):
    r = assert_nonlocal(single_layer(many_kinds, HEBB, n_post=3, scalars=["m"]), kinds=MANY, seed=seed, **SEARCH)
    assert r.kinds == MANY


@pytest.mark.parametrize("seed", SEEDS)
def test_backprop_names_weight_transport_at_every_seed(seed):
    """Two and three layers: weight transport (and, for three, W3 read by W1: another layer's weights)."""
    r = assert_nonlocal(lambda s: Backprop().checkable(s), n_populations=3, seed=seed,
                        kinds={"weight transport", "depends on cells not at the synapse"}, **SEARCH)
    assert r.layer_local("W2") and not r.layer_local("W1")
    r = assert_nonlocal(lambda s: Backprop().checkable(s), n_populations=4, seed=seed,
                        kinds={"weight transport", "depends on another layer's weights"}, **SEARCH)
    assert r.layer_local("W3") and not r.layer_local("W2")


@pytest.mark.parametrize("seed", SEEDS)
def test_kinds_in_different_layers_are_all_named(seed):
    """Layer A reads another pre cell only when its post is positive; layer B reads layer A's weights:
    both named, in their own layers; the unplanted network is local at the same seed."""
    spec = StateSpec({"p0": 3, "p1": 2, "p2": 2}, (Layer("A", "p1", "p0"), Layer("B", "p2", "p1")),
                     {"x": Cells("p0"), "h": Cells("p1"), "y": Cells("p2"), "WA": Weight("A"), "WB": Weight("B")})
    contracts = {"A": HEBB, "B": HEBB}

    def clean(s):
        return {"A": s["h"].T @ s["x"], "B": s["y"].T @ s["h"]}

    def planted(s):
        gate = (s["h"] > 0).to(s["h"].dtype)
        return {"A": (s["h"] * gate).T @ s["x"].roll(1, dims=1), "B": s["y"].T @ s["h"] * s["WA"].sum()}

    assert_local(Checkable("clean", spec, contracts, clean), seed=seed, **KW)
    r = check(Checkable("planted", spec, contracts, planted), seed=seed, **SEARCH)
    assert {(v.layer, v.kind) for v in r.violations} == {("A", "depends on other cells of the layer"),
                                                         ("B", "depends on another layer's weights")}


def test_search_is_complete_and_still_shrinks():
    r = check(single_layer(many_kinds, HEBB, n_post=3, scalars=["m"]), **KW)
    assert r.examples == KW["max_examples"]  # searched every state, not only up to the first failure
    assert r.smallest.startswith("sizes fixed, batch ")
    r = check(lambda s: Backprop().checkable(s), n_populations=3, **KW)
    assert r.smallest.startswith("sizes [1, 1, 1]")
