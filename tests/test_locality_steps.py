"""Whole training steps written from the papers' equations (neurolearn.locality.reference_steps): FA, DFA
and DTP local, sign-symmetric and backprop weight transport, each with its opposite verdict; the
check-locality table judges verdicts and named kinds."""

import pytest
import torch

from neurolearn.locality import Checkable, Contract, Report, assert_local, assert_nonlocal, check
from neurolearn.locality.contract import ParameterError
from neurolearn.locality.reference_steps import builtin_steps, dtp_step, error_feedback_step
from neurolearn.locality.report import as_expected, builtin_checks, format_table

KW = {"max_examples": 10}


@pytest.mark.parametrize("index", range(len(builtin_steps())))
def test_reference_steps_get_their_verdicts_and_kinds(index):
    factory, n, local, kinds = builtin_steps()[index]
    if local:
        assert_local(factory, n_populations=n, **KW)
    else:
        r = assert_nonlocal(factory, n_populations=n, kinds=kinds, **KW)
        assert not r.layer_local("W1") and r.layer_local(f"W{n - 1}")  # the output layer stays local


def test_reference_steps_are_the_equations():
    """FA with B = W is backprop; DTP with eta small and G = W^T moves like backprop at first order
    (Lee et al. 2015): the hidden target difference t_l - h_l ~ -eta (e_{l+1} W_{l+1}) for tiny eta."""
    g = torch.Generator().manual_seed(0)
    sizes = (3, 4, 2)
    s = {"x": torch.randn(5, 3, generator=g), "u1": torch.randn(5, 4, generator=g) * 0.3,
         "u2": torch.randn(5, 2, generator=g) * 0.3, "d": torch.rand(5, 2, generator=g),
         "W1": torch.randn(4, 3, generator=g), "W2": torch.randn(2, 4, generator=g) * 0.1}
    s = {k: v.double() for k, v in s.items()}
    bp = error_feedback_step(sizes, "backprop").update(s)
    fa = error_feedback_step(sizes, "fa").update(s | {"B2": s["W2"]})
    torch.testing.assert_close(fa["W1"], bp["W1"])
    eta = 1e-6
    dtp = dtp_step(sizes, eta=eta).update(s | {"G2": s["W2"].T})
    # top: t_2 - h_2 = -eta (y - d) -> dW2 = eta * backprop's dW2 (the output's sigmoid slope included)
    torch.testing.assert_close(dtp["W2"] / eta, bp["W2"], rtol=1e-4, atol=1e-6)
    # hidden: tanh(G t) - tanh(G h) ~ -eta ((y - d) W2) at h2 = sigmoid(u2) ~ 0.5: same sign pattern as bp
    assert torch.nn.functional.cosine_similarity(dtp["W1"].flatten(), bp["W1"].flatten(), dim=0) > 0.5


def test_dtp_with_forward_weights_as_inverse_is_weight_transport():
    """DTP's inverse is a separate (fixed) matrix; sending targets down through W2^T instead is not local."""
    ch = dtp_step((3, 2, 2))

    def transposed(s):
        return ch.update(s | {"G2": s["W2"].T})

    assert_nonlocal(Checkable("DTP through W2^T", ch.spec, ch.contracts, transposed), kinds={"weight transport"}, **KW)


def test_undeclared_inverse_or_direct_matrix_is_named():
    ch = dtp_step((3, 2, 2, 2))
    short = dict(ch.contracts, W1=Contract("W1", allows={"pre", "post", "neuron_signal"},
                                            pathways=("target", "inverse G2")))
    assert_nonlocal(Checkable("DTP, G3 undeclared", ch.spec, short, ch.fn), kinds={"undeclared pathway 'inverse G3'"},
                    **KW)
    dfa = error_feedback_step((3, 2, 2, 2), "dfa")
    swapped = dict(dfa.contracts, W1=Contract("W1", allows={"pre", "post", "neuron_signal"}, pathways=("direct D2",)))
    assert_nonlocal(Checkable("DFA, D1 undeclared", dfa.spec, swapped, dfa.fn), kinds={"undeclared pathway 'direct D1'"},
                    **KW)


def test_reference_steps_validate_their_arguments():
    with pytest.raises(ParameterError, match="feedback must be one of"):
        error_feedback_step((2, 2), "transpose")
    with pytest.raises(ParameterError, match="sizes must be at least two"):
        dtp_step((3,))
    with pytest.raises(ParameterError, match="eta must be in"):
        dtp_step((2, 2), eta=0.0)


def test_table_row_is_expected_only_with_the_verdict_and_every_kind():
    r = Report("r", {})
    r.expected_kinds = set()
    assert as_expected(r, True) and not as_expected(r, False)
    r.violations = [type("V", (), {"kind": "depends on cells not at the synapse", "layer": "W1"})()]
    r.expected_kinds = {"weight transport"}
    assert not as_expected(r, False)  # non-local, but weight transport not named
    assert "NO" in format_table([(r, False)])
    r.expected_kinds = {"depends on cells not at the synapse"}
    assert as_expected(r, False) and "yes" in format_table([(r, False)])


def test_check_locality_lists_the_whole_steps():
    names = [check(f, n_populations=n, max_examples=1).name for f, n, _, _ in builtin_checks()
             if getattr(f, "__module__", "") == "neurolearn.locality.reference_steps"]
    assert names == ["Feedback alignment (2 layers)", "Feedback alignment (3 layers)",
                     "Direct feedback alignment (3 layers)", "Difference target prop (2 layers)",
                     "Difference target prop (3 layers)", "Sign-symmetric (2 layers)", "Sign-symmetric (3 layers)",
                     "Backprop from equations (3 layers)"]
