"""View generators: the random deformations that make two views of one image (Tang, Yang & Amit 2022).

A view generator is a frozen, registered description (kind ``"view"``) called as
``view(x, generator) -> x'`` on a batch of images ``(B, C, H, W)`` or ``(B, H, W)``; every random draw
comes from ``generator`` (a CPU ``torch.Generator``, so a CUDA batch gets the same views as a CPU one:
the draws are made on the CPU and moved). All work is batched tensor operations (``affine_grid`` and
``grid_sample``), never per-image PIL transforms.

``TangAffine`` (``"tang_affine"``, METHODS.md section 2.1 V-TangAffine, without the colour step of
3-channel images): for each image ``b`` independently

    theta_b = [[1, 0, 0], [0, 1, 0]] + U_b,     U_b ~ Uniform(-a, a)^(2x3),  a = amplitude (0.25)
    theta_b[:, 2] *= shift_factor (2.0)         translations ~ Uniform(-0.5, 0.5) in normalised [-1, 1] units
    x'_b = grid_sample(x_b, affine_grid(theta_b, align_corners=True), bilinear, padding)
    x'_b <- flip_horizontal(x'_b) with probability hflip (0.5)

where only ``floor(fraction * B)`` images, chosen by a random permutation, are warped (the authors'
biological-SSL code perturbs a random half of every batch, ``fraction = 0.5``; SSL-DTP all of it,
``fraction = 1``, with border padding: METHODS.md section 11 A7) and the others keep the identity.

:func:`transformed_test_set` makes the seeded transformed-MNIST test set of the offline substitute of
Tang et al.'s Table 4 (METHODS.md section 5, ambiguity A10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._validate import ParameterError
from ..describe import Description, param, register

#: the padding modes of ``grid_sample`` a view may use
PADDINGS = ("zeros", "border")


def _as_maps(x, owner: str) -> tuple[torch.Tensor, bool]:
    """``x`` as ``(B, C, H, W)`` and whether it came without a channel axis; a clear error otherwise."""
    if not torch.is_tensor(x):
        raise ParameterError(f"{owner}: x must be a torch tensor of images (B, C, H, W) or (B, H, W), "
                             f"got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ParameterError(f"{owner}: x must be a batch of images of shape (B, C, H, W) or (B, H, W), got shape "
                             f"{tuple(x.shape)}; flattened inputs (B, features) cannot be deformed -- reshape them to "
                             "images first")
    if not x.is_floating_point():
        raise ParameterError(f"{owner}: x must be a floating-point tensor, got {x.dtype}")
    return (x.unsqueeze(1), True) if x.ndim == 3 else (x, False)


def _check_generator(generator, owner: str):
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise ParameterError(f"{owner}: generator must be a CPU torch.Generator (or None: torch's global one), got "
                             f"{generator!r}")


def warp(x: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """``grid_sample(x, affine_grid(theta, align_corners=True))``, bilinear: the output pixel at normalised
    position ``p`` takes the input's value at ``theta[:, :2] p + theta[:, 2]`` (``x``: ``(B, C, H, W)``,
    ``theta``: ``(B, 2, 3)``; outside the image ``padding`` "zeros" or "border")."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


class View(Description):
    """Base of view generators: ``view(x, generator) -> x'`` (module docstring)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


@register("view", "none")
@dataclass(frozen=True)
class Identity(View):
    """The identity view ``x' = x`` (no deformation: a baseline; both views of a pair are the image)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` itself (checked like any view's input)."""
        _as_maps(x, "Identity")
        _check_generator(generator, "Identity")
        return x


@register("view", "tang_affine")
@dataclass(frozen=True)
class TangAffine(View):
    """Tang et al. 2022's random affine view with horizontal flips (module docstring; METHODS.md 2.1).

    ``amplitude`` a of the uniform perturbation of theta, ``shift_factor`` multiplying its translation
    column, ``padding`` "zeros" (biological-SSL code) | "border" (SSL-DTP code), ``fraction`` of each batch
    that is warped (floor(fraction B) images by a random permutation), ``hflip`` probability per image.
    """

    amplitude: float = param(0.25, low=0.0, help="entries of theta - identity ~ Uniform(-amplitude, amplitude)")
    shift_factor: float = param(2.0, low=0.0, help="the translation column of the perturbation is multiplied by this")
    padding: str = param("zeros", choices=PADDINGS, help="grid_sample padding: zeros (biological-SSL) or border (SSL-DTP)")
    fraction: float = param(0.5, low=0.0, high=1.0, help="fraction of each batch that is warped (the rest: identity)")
    hflip: float = param(0.5, low=0.0, high=1.0, help="probability of a horizontal flip per image")

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random draws for a batch of ``n`` images, on the CPU: ``(theta (n, 2, 3), warped (n,) bool,
        flipped (n,) bool)``; theta is the identity where ``warped`` is false. Draw order: perturbations,
        permutation, flips."""
        _check_generator(generator, "TangAffine")
        u = (torch.rand((n, 2, 3), generator=generator, dtype=torch.float64) * 2 - 1) * self.amplitude
        u[:, :, 2] *= self.shift_factor
        chosen = torch.randperm(n, generator=generator)[: int(math.floor(self.fraction * n + 1e-9))]
        warped = torch.zeros(n, dtype=torch.bool)
        warped[chosen] = True
        flipped = torch.rand(n, generator=generator, dtype=torch.float64) < self.hflip
        theta = torch.eye(2, 3, dtype=torch.float64).expand(n, 2, 3).clone()
        theta[warped] += u[warped]
        return theta, warped, flipped

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One view of every image of ``x`` ``(B, C, H, W)`` or ``(B, H, W)`` (same shape, device, dtype)."""
        maps, squeezed = _as_maps(x, "TangAffine")
        theta, warped, flipped = self.draw(maps.shape[0], generator)
        out = maps.clone()
        idx = warped.nonzero().squeeze(1).to(maps.device)
        if idx.numel():
            out[idx] = warp(maps[idx], theta[warped], self.padding)
        fidx = flipped.nonzero().squeeze(1).to(maps.device)
        if fidx.numel():
            out[fidx] = out[fidx].flip(-1)
        return out.squeeze(1) if squeezed else out


def transformed_test_set(x: torch.Tensor, seed: int = 0, rotation: float = 0.375, log_scale: float = 0.375,
                         shift: float = 0.5) -> tuple[torch.Tensor, dict]:
    """The seeded transformed test set of the offline substitute of Tang et al. 2022's Table 4 (METHODS.md
    section 5; the authors' file is unpublished, ambiguity A10). For each image, independently,

        alpha ~ Uniform(-rotation, rotation)        rad   (1.5 u, u ~ U(-0.25, 0.25): +-0.375 rad = +-21.5 deg)
        s     = exp(Uniform(-log_scale, log_scale))      (exp(1.5 u'): 0.69 .. 1.46)
        t     ~ Uniform(-shift, shift)^2                 (normalised coordinates: +-0.5 = +-7 px at 28 px)
        theta = [[s cos alpha, -s sin alpha, t_x], [s sin alpha, s cos alpha, t_y]]
        x'    = grid_sample(x, affine_grid(theta, align_corners=True)), bilinear, zero fill, no flip

    (theta is the sampling matrix of ``affine_grid``, as the authors' views use theta; whether their
    unpublished test file was made this way is not known, METHODS.md A10. alpha, log s and t are symmetric, so
    the inverse map -- the image's own rotation, scale and shift -- has the same distribution.) Draws come from
    ``torch.Generator().manual_seed(seed)`` in the order alpha, log s, t. Returns ``(x', params)``,
    ``params`` a JSON-able record of the generator (name, seed, ranges, padding, flip, number of images)
    for the run folder.
    """
    maps, squeezed = _as_maps(x, "transformed_test_set")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"transformed_test_set: seed must be an integer >= 0, got {seed!r}")
    for name, v in (("rotation", rotation), ("log_scale", log_scale), ("shift", shift)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ParameterError(f"transformed_test_set: {name} must be a finite number >= 0, got {v!r}")
    n = maps.shape[0]
    g = torch.Generator().manual_seed(seed)
    alpha = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * rotation
    s = torch.exp((torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * log_scale)
    t = (torch.rand((n, 2), generator=g, dtype=torch.float64) * 2 - 1) * shift
    c, si = torch.cos(alpha) * s, torch.sin(alpha) * s
    theta = torch.stack([torch.stack([c, -si, t[:, 0]], 1), torch.stack([si, c, t[:, 1]], 1)], 1)
    out = warp(maps, theta, "zeros") if n else maps.clone()
    params = {"generator": "neurolearn.data.views.transformed_test_set", "seed": seed,
              "rotation_rad": [-float(rotation), float(rotation)], "log_scale": [-float(log_scale), float(log_scale)],
              "shift": [-float(shift), float(shift)], "padding": "zeros", "interpolation": "bilinear",
              "align_corners": True, "flip": False, "n_images": int(n), "image_shape": list(maps.shape[1:])}
    return (out.squeeze(1) if squeezed else out), params
