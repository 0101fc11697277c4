"""Weight sharing: a convolution's kernel update is local when each position's term is the local
product of its own synapse and the kernel sums them; a position's term reading another position's
cells is not. The per-position terms sum to torch's own convolution weight gradient."""

import pytest
import torch
import torch.nn.functional as F

from neurolearn.locality import (
    Cells,
    Checkable,
    CheckerError,
    Contract,
    Shared,
    StateSpec,
    Weight,
    assert_local,
    assert_nonlocal,
    check,
    check_batch_additivity,
    check_permutation_equivariance,
)
from neurolearn.locality.contract import ParameterError

KW = {"max_examples": 8}
HEBB = Contract("Hebb", allows={"pre", "post"})
OJA = Contract("Oja", allows={"pre", "post", "weight"})
C_IN, C_OUT, K, L = 2, 2, 2, 4


def conv_spec(**kw) -> StateSpec:
    layer = Shared.conv1d("K", "y", "x", C_IN, C_OUT, K, L, **kw)
    return StateSpec({"x": layer.n_pre, "y": layer.n_post}, (layer,),
                     {"x": Cells("x"), "y": Cells("y"), "K": Weight("K")})


def patches(x, stride=1):
    """(batch, C_in * L) -> (batch, C_in, positions, K): the input under the kernel at each position."""
    return x.reshape(x.shape[0], C_IN, -1).unfold(2, K, stride)


def hebbian_terms(s, stride=1):
    """dK_p[o, c, m] = sum_b y_b[o, p] x_b[c, p s + m]: each position's Hebbian product."""
    y = s["y"].reshape(s["y"].shape[0], C_OUT, -1)
    return torch.einsum("bop,bcpm->pocm", y, patches(s["x"], stride))


def oja_terms(s):
    """dK_p[o, c, m] = sum_b y[o, p] (x[c, p + m] - y[o, p] K[o, c, m]) (Oja 1982 at each position)."""
    y = s["y"].reshape(s["y"].shape[0], C_OUT, -1)
    return hebbian_terms(s) - torch.einsum("bop,ocm->pocm", y * y, s["K"])


def neighbour_terms(s):
    """Position p's term reads the patch of position p + 1 (wrapping): another position's cells."""
    y = s["y"].reshape(s["y"].shape[0], C_OUT, -1)
    return torch.einsum("bop,bcpm->pocm", y, patches(s["x"]).roll(-1, dims=2))


def conv(fn, contract=HEBB, name=None, spec=None):
    return Checkable(name or fn.__name__, spec or conv_spec(), {"K": contract}, lambda s: {"K": fn(s)})


def test_conv_hebbian_kernel_is_local():
    assert_local(conv(hebbian_terms), **KW)
    assert_local(conv(oja_terms, OJA), **KW)


def test_a_position_reading_another_positions_cells_is_not():
    r = assert_nonlocal(conv(neighbour_terms), kinds={"depends on other cells of the layer"}, **KW)
    assert all("position" in v.at for v in r.violations)


def test_kernel_weight_rules_need_their_contract_and_other_kernel_entries_are_other_synapses():
    assert_nonlocal(conv(oja_terms, HEBB), kinds={"reads its own weight the contract does not allow"}, **KW)

    def kernel_norm(s):  # every term scaled by the kernel's norm: reads other synapses' (shared) weights
        return hebbian_terms(s) * s["K"].norm()

    assert_nonlocal(conv(kernel_norm, OJA), kinds={"depends on other synapses' weights"}, **KW)


def test_batch_statistics_in_a_conv_rule_are_caught():
    def centred(s):
        return hebbian_terms(s | {"x": s["x"] - s["x"].mean(0, keepdim=True)})

    assert_nonlocal(conv(centred), kinds={"batch statistics"}, **KW)
    check_batch_additivity(conv(hebbian_terms))


def test_the_terms_sum_to_torchs_convolution_weight_gradient():
    """sum_p dK_p of the Hebbian terms = d/dK sum(y * conv1d(x, K)): the kernel update is a sum over positions."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, C_IN * L, generator=g, dtype=torch.float64)
    layer = Shared.conv1d("K", "y", "x", C_IN, C_OUT, K, L, stride=2)
    y = torch.randn(3, layer.n_post, generator=g, dtype=torch.float64)
    kernel = torch.randn(C_OUT, C_IN, K, dtype=torch.float64, requires_grad=True)
    out = F.conv1d(x.reshape(3, C_IN, L), kernel, stride=2)
    (out.reshape(3, -1) * y).sum().backward()
    torch.testing.assert_close(layer.kernel_update(hebbian_terms({"x": x, "y": y}, stride=2)), kernel.grad)


def test_conv2d_positions_match_torch_and_a_hebbian_kernel_is_local():
    layer = Shared.conv2d("K", "y", "x", 1, 2, 2, 3, 3)
    assert layer.kernel_shape == (2, 1, 2, 2) and layer.n_positions == 4 and (layer.n_post, layer.n_pre) == (8, 9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, generator=g, dtype=torch.float64)
    y = torch.randn(2, 8, generator=g, dtype=torch.float64)
    kernel = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    (F.conv2d(x.reshape(2, 1, 3, 3), kernel).reshape(2, -1) * y).sum().backward()

    def terms(s):  # unfold: (batch, 1 * 2 * 2, positions)
        cols = F.unfold(s["x"].reshape(-1, 1, 3, 3), 2)
        return torch.einsum("bop,bkp->pok", s["y"].reshape(-1, 2, 4), cols).reshape(4, 2, 1, 2, 2)

    torch.testing.assert_close(layer.kernel_update(terms({"x": x, "y": y})), kernel.grad)
    spec = StateSpec({"x": 9, "y": 8}, (layer,), {"x": Cells("x"), "y": Cells("y")})
    assert_local(Checkable("conv2d Hebbian", spec, {"K": HEBB}, lambda s: {"K": terms(s)}), **KW)

    def transposed(s):  # the patch read upside down: each term reads cells of other positions
        return terms({"x": s["x"].flip(1), "y": s["y"]})

    assert_nonlocal(Checkable("conv2d flipped", spec, {"K": HEBB}, lambda s: {"K": transposed(s)}),
                    kinds={"depends on other cells of the layer"}, **KW)


def test_shared_layers_are_validated():
    with pytest.raises(ParameterError, match="kernel"):
        Shared.conv1d("K", "y", "x", 1, 1, 5, 4)
    with pytest.raises(ParameterError, match="in_channels must be an integer >= 1"):
        Shared.conv1d("K", "y", "x", 0, 1, 2, 4)
    layer = Shared.conv1d("K", "y", "x", C_IN, C_OUT, K, L)
    with pytest.raises(ParameterError, match="connects 6 post and 8 pre cells"):
        StateSpec({"x": 8, "y": 5}, (layer,), {})
    with pytest.raises(ParameterError, match="with a time axis is not supported"):
        StateSpec({"x": 8, "y": 6}, (layer,), {}, time=3)
    with pytest.raises(ParameterError, match="outside"):
        Shared("K", "y", "x", (1,), (((0, 9),),), 1, 2)
    with pytest.raises(CheckerError, match=r"must have shape \(3, 2, 2, 2\) \(positions, \*kernel_shape\)"):
        check(conv(lambda s: hebbian_terms(s).sum(0), name="summed"), **KW)
    with pytest.raises(CheckerError, match="shared layer"):
        check_permutation_equivariance(conv(hebbian_terms), "x")
