"""Misuse of the checker gives a CheckerError / ParameterError saying what was expected, never a raw
TypeError or AttributeError from inside the checker."""

import pytest
import torch

from neurolearn.locality import (
    Checkable,
    CheckerError,
    Contract,
    assert_local,
    check,
    single_layer,
)
from neurolearn.locality.contract import ParameterError

HEBB = Contract("Hebb", allows={"pre", "post"})
KW = {"max_examples": 5}


def oja(s):
    x, y, W = s["pre"], s["post"], s["W"]
    return y.T @ x - (y * y).sum(0)[:, None] * W


def test_a_plain_function_or_a_module_is_not_a_target():
    for target in (oja, torch.nn.Linear(3, 2)):
        with pytest.raises(CheckerError, match="a checkable target is a Checkable") as e:
            check(target)
        assert "single_layer" in str(e.value) and "n_populations" in str(e.value)
    with pytest.raises(CheckerError, match="got str"):
        check("oja")
    # the opposite: the same function wrapped is checked
    assert_local(single_layer(oja, Contract("Oja", allows={"pre", "post", "weight"})), **KW)


def test_a_wrong_factory_is_a_checker_error():
    with pytest.raises(CheckerError, match=r"the factory 'oja' raised TypeError.*sizes \[2, 2\]"):
        check(oja, n_populations=2)
    with pytest.raises(CheckerError, match="returned int, not a Checkable"):
        check(lambda s: 3, n_populations=1)
    assert not check(lambda s: single_layer(oja, HEBB, n_pre=s[0]), n_populations=1, **KW).local  # reads W


def test_update_returning_unknown_or_non_tensor_values():
    with pytest.raises(CheckerError, match=r"dW of layer 'W' must be a tensor, got dict"):
        check(single_layer(lambda s: {"W": s["post"].T @ s["pre"]}, HEBB), **KW)
    ch = single_layer(lambda s: s["post"].T @ s["pre"], HEBB)
    with pytest.raises(CheckerError, match=r"unknown layer\(s\) \['V'\]; the layers are \['W'\]"):
        check(Checkable("extra", ch.spec, ch.contracts, lambda s: {"W": ch.update(s)["W"], "V": s["pre"]}), **KW)
    with pytest.raises(CheckerError, match="contracts must map every layer to a Contract"):
        check(Checkable("no contract", ch.spec, {}, ch.update), **KW)
    assert check(ch, **KW).local


def test_contract_allows_a_string_says_pass_a_set():
    with pytest.raises(ParameterError, match=r"allows must be a set .* got 'pre' -- pass \{'pre'\}"):
        Contract("c", allows="pre")
    with pytest.raises(ParameterError, match=r"pathways must be a set .* got 'KWTA'"):
        Contract("c", allows={"pre", "neuron_signal"}, pathways="KWTA")
    with pytest.raises(ParameterError, match="got int"):
        Contract("c", allows=3)
    assert Contract("c", allows={"pre"}).allows == {"pre"}
    assert Contract("c", allows=("pre", "neuron_signal"), pathways=["KWTA"]).pathways == ("KWTA",)
