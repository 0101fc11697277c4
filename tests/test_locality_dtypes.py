"""Tolerances that follow the dtype and the magnitude of the update: rules computed in float16,
bfloat16, float32 and float64 are local, a real batch statistic is caught in each, and the
sensitivity is pinned both ways (a planted violation a little above the dtype's rounding is caught,
rounding is not; raising or lowering the tolerance a million-fold makes a test here fail)."""

import pytest
import torch

from neurolearn.locality import (
    CheckerError,
    Contract,
    assert_local,
    assert_nonlocal,
    check,
    single_layer,
)
from neurolearn.locality import checker as checker_module
from neurolearn.locality.checker import rounding_tolerance

WITH_W = Contract("Oja", allows={"pre", "post", "weight"})
KW = {"max_examples": 15}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
#: the planted violations below are PLANT * eps of the update's magnitude. The checker's tolerance is
#: 8 eps times (batch + 1) <= 32 eps for batches up to 3; rounding measured on Oja is below 0.6 eps (B + 1).
PLANT = 256


def oja_in(dtype):
    """Oja (1982), dW_ij = sum_b y_bi (x_bj - y_bi W_ij), computed in ``dtype`` whatever the state's dtype."""
    def oja(s):
        x, y, W = s["pre"].to(dtype), s["post"].to(dtype), s["W"].to(dtype)
        return y.T @ x - (y * y).sum(0)[:, None] * W
    oja.__name__ = f"oja_{str(dtype).split('.')[-1]}"
    return oja


def planted_batch_statistic(dtype, size):
    """Oja plus ``size * eps`` times a centred Hebbian term (a batch mean: zero for one sample)."""
    eps = torch.finfo(dtype).eps

    def fn(s):
        x, y = s["pre"].to(dtype), s["post"].to(dtype)
        return oja_in(dtype)(s) + (size * eps) * (y.T @ (x - x.mean(0, keepdim=True)))
    return fn


def planted_lateral(dtype, size):
    """Oja plus ``size * eps`` times the summed activity of all post cells (another cell's activity)."""
    eps = torch.finfo(dtype).eps

    def fn(s):
        x, y = s["pre"].to(dtype), s["post"].to(dtype)
        return oja_in(dtype)(s) + (size * eps) * (y.sum(1, keepdim=True) - y).T @ x
    return fn


@pytest.mark.parametrize("dtype", DTYPES)
def test_oja_computed_in_each_dtype_is_local(dtype):
    assert_local(single_layer(oja_in(dtype), WITH_W, n_pre=4, n_post=3), **KW)
    # and drawn in that dtype from the start
    assert_local(single_layer(oja_in(dtype), WITH_W, n_pre=4, n_post=3), dtype=dtype, **KW)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_real_batch_statistic_is_caught_in_each_dtype(dtype):
    def centred(s):
        x, y = s["pre"].to(dtype), s["post"].to(dtype)
        return y.T @ (x - x.mean(0, keepdim=True))

    assert_nonlocal(single_layer(centred, WITH_W), kinds={"batch statistics"}, **KW)


def test_float32_nn_linear_is_local():
    """An Oja step written with a float32 ``nn.Linear`` holding the weights (as a torch user would):
    the post activity is the recorded state, the decay reads the module's weight, all in float32."""
    lin = torch.nn.Linear(4, 3, bias=False)

    def oja_module(s):
        with torch.no_grad():
            lin.weight.copy_(s["W"])
            y, x = s["post"].float(), s["pre"].float()
            return y.T @ x - (y * y).sum(0)[:, None] * lin.weight

    assert_local(single_layer(oja_module, WITH_W, n_pre=4, n_post=3), **KW)
    assert_local(single_layer(oja_module, WITH_W, n_pre=4, n_post=3), dtype=torch.float32, **KW)

    def forward_hebb(s):  # the post activity computed by the module from every input: not local
        with torch.no_grad():
            lin.weight.copy_(s["W"])
            return lin(s["pre"].float()).T @ s["pre"].float()

    assert_nonlocal(single_layer(forward_hebb, WITH_W, n_pre=4, n_post=3), dtype=torch.float32,
                    kinds={"depends on other synapses' weights"}, **KW)


@pytest.mark.parametrize("dtype", DTYPES)
def test_planted_violation_a_little_above_rounding_is_caught(dtype):
    """PLANT eps is a few times the tolerance: caught as a batch statistic and as another cell's
    activity. A tolerance raised a million-fold would miss both."""
    assert_nonlocal(single_layer(planted_batch_statistic(dtype, PLANT), WITH_W, n_pre=4, n_post=3),
                    kinds={"batch statistics"}, **KW)
    if dtype == torch.float64:  # the perturbations are large: a far smaller coefficient is caught
        assert_nonlocal(single_layer(planted_lateral(dtype, 1.0), WITH_W, n_pre=4, n_post=3),
                        kinds={"depends on other cells of the layer"}, **KW)
    assert_nonlocal(single_layer(planted_lateral(dtype, PLANT), WITH_W, n_pre=4, n_post=3),
                    kinds={"depends on other cells of the layer"}, **KW)


def test_tolerance_is_pinned_both_ways(monkeypatch):
    """The tests above fail if the tolerance moves a million-fold either way: shown here by moving it."""
    rule = single_layer(planted_batch_statistic(torch.float32, PLANT), WITH_W, n_pre=4, n_post=3)
    oja32 = single_layer(oja_in(torch.float32), WITH_W, n_pre=4, n_post=3)
    assert not check(rule, **KW).local and check(oja32, **KW).local
    monkeypatch.setattr(checker_module, "ROUNDING_FACTOR", checker_module.ROUNDING_FACTOR * 1e6)
    assert check(rule, **KW).local  # raised: the planted statistic is missed
    monkeypatch.setattr(checker_module, "ROUNDING_FACTOR", checker_module.ROUNDING_FACTOR * 1e-12)
    r = check(oja32, **KW)  # lowered: float32 rounding is reported as a batch statistic
    assert r.kinds == {"batch statistics"}


def test_rounding_tolerance_follows_the_lowest_precision():
    assert rounding_tolerance({torch.float64}) < rounding_tolerance({torch.float64, torch.float32})
    assert rounding_tolerance({torch.float32, torch.float16}) == rounding_tolerance({torch.float16})
    assert rounding_tolerance({torch.bfloat16}) > rounding_tolerance({torch.float16})
    # an explicit rtol overrides it: 0.5 hides a batch statistic of relative size 256 eps(float32)
    rule = single_layer(planted_batch_statistic(torch.float32, PLANT), WITH_W, n_pre=4, n_post=3)
    assert check(rule, rtol=0.5, **KW).local and not check(rule, **KW).local
    with pytest.raises(CheckerError, match="rtol must be"):
        check(rule, rtol=2.0)
    with pytest.raises(CheckerError, match="dtype must be one of"):
        check(rule, dtype=torch.int32)
