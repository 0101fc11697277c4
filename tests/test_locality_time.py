"""Per-sample scalars and a time axis: a reward per trial is the trial's own global scalar (another
trial's is batch statistics); a rule may read the past and present of its synapse's cells, never the
future (the checker perturbs later steps). Pair-based STDP with traces is local; reading t+1 is not."""

import math

import pytest
import torch

from neurolearn.locality import (
    Cells,
    Checkable,
    CheckerError,
    Contract,
    Layer,
    SampleScalar,
    StateSpec,
    Weight,
    assert_local,
    assert_nonlocal,
    check,
    check_batch_additivity,
    check_permutation_equivariance,
    single_layer,
)
from neurolearn.locality.contract import ParameterError

KW = {"max_examples": 10}
HEBB = Contract("Hebb", allows={"pre", "post"})
THREE_FACTOR = Contract("three-factor", allows={"pre", "post", "global_scalar"})


# ----------------------------------------------------------------------------- per-sample scalars
def reward_hebb(s):
    """dW = sum_b r_b y_b x_b^T (a reward-modulated Hebbian rule)."""
    return (s["r"][:, None] * s["post"]).T @ s["pre"]


def reward_baseline(s):
    """dW = sum_b (r_b - mean r) y_b x_b^T: the baseline reads every trial's reward."""
    return ((s["r"] - s["r"].mean())[:, None] * s["post"]).T @ s["pre"]


def test_per_sample_reward_is_local_and_a_batch_baseline_is_batch_statistics():
    assert_local(single_layer(reward_hebb, THREE_FACTOR, sample_scalars=["r"]), **KW)
    assert_nonlocal(single_layer(reward_baseline, THREE_FACTOR, sample_scalars=["r"]), kinds={"batch statistics"}, **KW)


def test_per_sample_reward_needs_global_scalar_in_the_contract():
    assert_nonlocal(single_layer(reward_hebb, HEBB, sample_scalars=["r"]),
                    kinds={"reads a per-sample scalar the contract does not allow"}, **KW)
    assert single_layer(reward_hebb, HEBB, sample_scalars=["r"]).spec.shape("r", 5) == (5,)


def test_reward_of_each_trial_is_sliced_with_its_sample():
    ch = single_layer(reward_hebb, THREE_FACTOR, sample_scalars=["r"], n_pre=3, n_post=3)
    check_batch_additivity(ch)
    check_permutation_equivariance(ch, "post")
    with pytest.raises(AssertionError, match="batch statistics"):
        check_batch_additivity(single_layer(reward_baseline, THREE_FACTOR, sample_scalars=["r"]), style="normal",
                               max_examples=25)


# ----------------------------------------------------------------------------- time axis: STDP
TAU = 20.0  # ms, trace time constants of Song, Miller & Abbott 2000 (tau+ = tau- = 20 ms), dt = 1 ms
A_PLUS, A_MINUS = 0.005, 0.00525


def stdp(s):
    """Pair-based STDP with traces (Bi & Poo 1998; Song, Miller & Abbott 2000), dt = 1 ms:

        x_j(t) = x_j(t-1) exp(-dt/tau+) + s_j(t)         (pre trace)
        y_i(t) = y_i(t-1) exp(-dt/tau-) + s_i(t)         (post trace)
        dW_ij(t) = A+ s_i(t) x_j(t) - A- y_i(t) s_j(t)  (summed over the batch)
    """
    pre, post = s["pre"], s["post"]  # spikes, (batch, T, n)
    decay = math.exp(-1.0 / TAU)
    x = torch.zeros_like(pre[:, 0])
    y = torch.zeros_like(post[:, 0])
    out = []
    for t in range(pre.shape[1]):
        x = decay * x + pre[:, t]
        y = decay * y + post[:, t]
        out.append(A_PLUS * post[:, t].T @ x - A_MINUS * y.T @ pre[:, t])
    return torch.stack(out)


def stdp_reads_next_post(s):
    """Potentiation gated by the *next* post spike: dW(t) = A+ s_i(t+1) x_j(t) - ...: reads the future."""
    ahead = torch.cat([s["post"][:, 1:], torch.zeros_like(s["post"][:, :1])], dim=1)
    return stdp(s) + A_PLUS * torch.einsum("bti,btj->tij", ahead, s["pre"])


def stdp_window(time=4, **kw):
    return lambda f: single_layer(f, HEBB, time=time, **kw)


def test_stdp_with_traces_over_time_is_local():
    r = assert_local(stdp_window()(stdp), **KW)
    assert r.examples == KW["max_examples"]


def test_a_rule_reading_a_later_step_reads_the_future():
    r = assert_nonlocal(stdp_window()(stdp_reads_next_post), kinds={"reads the future"}, **KW)
    assert any("post at time steps >" in v.culprit for v in r.violations if v.kind == "reads the future")
    assert r.kinds == {"reads the future"}  # nothing else: only the future is wrong


def test_stdp_reading_another_cell_is_still_other_cells_over_time():
    def other_post(s):  # a post cell's potentiation gated by the first post cell's spikes
        return stdp(s) + A_PLUS * torch.einsum("bt,btj->tj", s["post"][:, :, 0], s["pre"])[:, None, :]

    assert_nonlocal(single_layer(other_post, HEBB, time=3, n_post=3), kinds={"depends on other cells of the layer"},
                    **KW)


def test_stdp_window_is_additive_over_trials_and_permutes():
    ch = stdp_window()(stdp)
    check_batch_additivity(ch)
    for pop in ("pre", "post"):
        check_permutation_equivariance(ch, pop)


def test_time_axis_shapes_and_the_reported_step():
    ch = single_layer(stdp, HEBB, time=5, n_pre=3, n_post=2, sample_scalars=["r"])
    assert ch.spec.shape("pre", 4) == (4, 5, 3) and ch.spec.shape("r", 4) == (4, 5)
    assert ch.spec.update_shape("W") == (5, 2, 3)
    r = check(stdp_window(time=3)(stdp_reads_next_post), **KW)
    future = [v for v in r.violations if v.kind == "reads the future"][0]
    assert str(future).startswith("dW[") and "at time steps >" in str(future)


def test_per_sample_reward_over_time_reads_only_the_present():
    def r_stdp(s):  # dW(t) = r(t) * STDP(t): a reward per step, the present one
        return s["r"].sum(0)[:, None, None] * stdp(s) if s["r"].shape[0] == 1 else torch.stack(
            [stdp({"pre": s["pre"][b:b + 1], "post": s["post"][b:b + 1]}) * s["r"][b][:, None, None]
             for b in range(s["r"].shape[0])]).sum(0)

    def r_next(s):
        nxt = torch.cat([s["r"][:, 1:], s["r"][:, :1]], dim=1)
        return r_stdp(s | {"r": nxt})

    assert_local(single_layer(r_stdp, THREE_FACTOR, time=3, sample_scalars=["r"]), **KW)
    assert_nonlocal(single_layer(r_next, THREE_FACTOR, time=3, sample_scalars=["r"]), kinds={"reads the future"}, **KW)


def test_time_axis_errors_are_clear():
    with pytest.raises(ParameterError, match="time must be None"):
        StateSpec({"a": 1}, (), {}, time=0)
    ch = stdp_window()(stdp)
    with pytest.raises(CheckerError, match=r"must have shape \(4, 2, 3\) \(time, post, pre\)"):
        check(Checkable("summed", ch.spec, ch.contracts, lambda s: {"W": stdp(s).sum(0)}), **KW)


def test_a_whole_step_over_time_with_weights():
    """Two populations over time and the synapse's own weight (a soft bound: A+ (1 - W) s_i x_j)."""
    spec = StateSpec({"a": 2, "b": 2}, (Layer("W", "b", "a"),),
                     {"pre": Cells("a"), "post": Cells("b"), "W": Weight("W")}, time=3)
    bounded = Contract("bounded STDP", allows={"pre", "post", "weight"})

    def soft(s):
        return {"W": stdp(s) * (1 - s["W"])}

    assert_local(Checkable("soft-bound STDP", spec, {"W": bounded}, soft), **KW)
    assert_nonlocal(Checkable("soft-bound STDP", spec, {"W": HEBB}, soft),
                    kinds={"reads its own weight the contract does not allow"}, **KW)
    assert SampleScalar().name == "reward"
