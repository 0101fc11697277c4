"""View generators and the seeded transformed test set against their equations (Tang et al. 2022; METHODS.md 2.1, 5)."""

import json
import math

import pytest
import torch

from neurolearn._validate import ParameterError
from neurolearn.data.views import Identity, TangAffine, transformed_test_set
from neurolearn.describe import lookup


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(n=8, c=1, h=10, w=10, seed=0):
    return torch.rand((n, c, h, w), generator=_gen(100 + seed))


def _ramps(n, h=9, w=11):
    """Images whose channel 0 is the normalised x coordinate and channel 1 the y coordinate (align_corners=True):
    bilinear sampling of a linear function is exact, so a warped ramp shows the map theta itself."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([xs, ys]).expand(n, 2, h, w).clone(), xs, ys


def _check_map(out, theta, xs, ys):
    """Where theta maps the output pixel inside the image, the warped ramps hold theta p (the equation of the view)."""
    for b in range(out.shape[0]):
        sx = theta[b, 0, 0] * xs + theta[b, 0, 1] * ys + theta[b, 0, 2]
        sy = theta[b, 1, 0] * xs + theta[b, 1, 1] * ys + theta[b, 1, 2]
        inside = (sx.abs() < 1 - 1e-9) & (sy.abs() < 1 - 1e-9)
        assert inside.any()
        assert torch.allclose(out[b, 0][inside], sx[inside], atol=1e-9)
        assert torch.allclose(out[b, 1][inside], sy[inside], atol=1e-9)


def test_views_are_registered():
    assert lookup("view", "tang_affine") is TangAffine
    assert lookup("view", "none") is Identity


def test_tang_affine_is_the_affine_map_of_its_draws():
    """x'_b = grid_sample(x_b, affine_grid(theta_b)): on coordinate ramps the output is theta_b p; theta_b - I is
    within +-amplitude, its translation column within +-amplitude * shift_factor."""
    view = TangAffine(fraction=1.0, hflip=0.0)
    x, xs, ys = _ramps(6)
    theta, warped, flipped = view.draw(6, _gen(3))
    assert warped.all() and not flipped.any()
    dev = theta - torch.eye(2, 3, dtype=torch.float64)
    assert (dev[:, :, :2].abs() <= 0.25).all() and (dev[:, :, 2].abs() <= 0.5).all()
    assert (dev[:, :, 2].abs() > 0.25).any()  # the translation column is doubled
    out = view(x, _gen(3))
    _check_map(out, theta, xs, ys)


def test_tang_affine_opposite_case_a_wrong_map_is_caught():
    view = TangAffine(fraction=1.0, hflip=0.0)
    x, xs, ys = _ramps(4)
    theta, _, _ = view.draw(4, _gen(3))
    out = view(x, _gen(4))  # another generator: other draws
    with pytest.raises(AssertionError):
        _check_map(out, theta, xs, ys)


def test_views_deterministic_per_generator_state_and_different_for_another():
    view = TangAffine()
    x = _images()
    a, b = view(x, _gen(1)), view(x, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, view(x, _gen(2)))
    g = _gen(1)
    first, second = view(x, g), view(x, g)  # the generator moves on: two independent views
    assert torch.equal(first, a) and not torch.equal(first, second)


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_fraction_half_changes_exactly_n_over_2_images(n):
    x = _images(n) + 0.1  # no image is invariant to a warp
    out = TangAffine(hflip=0.0)(x, _gen(5))
    changed = (out != x).flatten(1).any(1)
    assert int(changed.sum()) == n // 2


def test_fraction_one_and_zero():
    x = _images(6) + 0.1
    assert int((TangAffine(fraction=1.0, hflip=0.0)(x, _gen(0)) != x).flatten(1).any(1).sum()) == 6
    assert torch.equal(TangAffine(fraction=0.0, hflip=0.0)(x, _gen(0)), x)


def test_flips_are_horizontal_and_drawn_per_image():
    x = _images(40)
    view = TangAffine(fraction=0.0, hflip=0.5)
    _, _, flipped = view.draw(40, _gen(7))
    out = view(x, _gen(7))
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert torch.equal(out[~flipped], x[~flipped])
    assert 0 < int(flipped.sum()) < 40
    assert torch.equal(TangAffine(fraction=0.0, hflip=1.0)(x, _gen(0)), x.flip(-1))


def test_three_dim_batches_and_padding():
    x = _images(5)[:, 0]
    out = TangAffine(fraction=1.0, hflip=0.0)(x, _gen(0))
    assert out.shape == x.shape
    assert torch.equal(out, TangAffine(fraction=1.0, hflip=0.0)(x[:, None], _gen(0))[:, 0])
    ones = torch.ones(4, 1, 8, 8)
    zeros_pad = TangAffine(fraction=1.0, hflip=0.0, amplitude=0.25)(ones, _gen(2))
    border_pad = TangAffine(fraction=1.0, hflip=0.0, amplitude=0.25, padding="border")(ones, _gen(2))
    assert (zeros_pad < 1 - 1e-6).any()  # zero fill comes in
    assert torch.allclose(border_pad, ones)  # border padding of a constant image is the image


@pytest.mark.parametrize("bad", [torch.zeros(4, 10), torch.zeros(2, 1, 1, 4, 4), torch.zeros(3, 4, 4, dtype=torch.int64)])
def test_shape_errors(bad):
    with pytest.raises(ParameterError, match="TangAffine: x must"):
        TangAffine()(bad, _gen(0))
    with pytest.raises(ParameterError, match="Identity: x must"):
        Identity()(bad, _gen(0))


def test_bad_parameters_and_generator():
    with pytest.raises(ParameterError, match="fraction"):
        TangAffine(fraction=1.5)
    with pytest.raises(ParameterError, match="padding"):
        TangAffine(padding="reflection")
    with pytest.raises(ParameterError, match="generator"):
        TangAffine()(_images(2), generator=1234)


def test_transformed_test_set_is_its_equation():
    """alpha ~ U(-r, r), s = exp(U(-l, l)), t ~ U(-h, h)^2 drawn in that order from Generator(seed);
    theta = [[s cos, -s sin, t_x], [s sin, s cos, t_y]]; zero fill, no flip."""
    x, xs, ys = _ramps(5)
    out, params = transformed_test_set(x, seed=11)
    g = _gen(11)
    alpha = (torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1) * 0.375
    s = torch.exp((torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1) * 0.375)
    t = (torch.rand((5, 2), generator=g, dtype=torch.float64) * 2 - 1) * 0.5
    theta = torch.zeros(5, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = s * torch.cos(alpha)
    theta[:, 0, 1], theta[:, 1, 0] = -s * torch.sin(alpha), s * torch.sin(alpha)
    theta[:, :, 2] = t
    _check_map(out, theta, xs, ys)
    with pytest.raises(AssertionError):  # opposite case: another seed is another set
        _check_map(transformed_test_set(x, seed=12)[0], theta, xs, ys)
    assert params["seed"] == 11 and params["rotation_rad"] == [-0.375, 0.375]
    assert math.isclose(math.exp(params["log_scale"][1]), math.exp(0.375))
    assert params["shift"] == [-0.5, 0.5] and params["flip"] is False and params["padding"] == "zeros"


def test_transformed_test_set_reproducible_and_recorded():
    x = _images(6, h=12, w=12)[:, 0]
    a, pa = transformed_test_set(x, seed=3)
    b, pb = transformed_test_set(x, seed=3)
    c, pc = transformed_test_set(x, seed=4)
    assert torch.equal(a, b) and pa == pb
    assert not torch.equal(a, c) and pc["seed"] == 4
    assert a.shape == x.shape
    assert json.loads(json.dumps(pa)) == pa  # JSON-able, as the run folder records it
    assert pa["n_images"] == 6 and pa["image_shape"] == [1, 12, 12]
    same, _ = transformed_test_set(x, seed=3, rotation=0.0, log_scale=0.0, shift=0.0)
    assert torch.allclose(same, x, atol=1e-6)  # no deformation: the identity


def test_transformed_test_set_errors():
    with pytest.raises(ParameterError, match="seed"):
        transformed_test_set(_images(2), seed=-1)
    with pytest.raises(ParameterError, match="rotation"):
        transformed_test_set(_images(2), rotation=float("nan"))
    with pytest.raises(ParameterError, match="x must"):
        transformed_test_set(torch.zeros(2, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_on_cuda_equal_cpu_views():
    """Draws are made on the CPU generator, so a CUDA batch gets the same views (up to the kernels' rounding)."""
    x = _images(6)
    for view in (TangAffine(), TangAffine(fraction=1.0, padding="border")):
        cpu, gpu = view(x, _gen(9)), view(x.cuda(), _gen(9))
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    a, pa = transformed_test_set(x.cuda(), seed=1)
    b, pb = transformed_test_set(x, seed=1)
    assert torch.allclose(a.cpu(), b, atol=1e-5) and pa == pb
