"""An objective over pairs of samples -- two augmented views of every image -- written outside the library.

For a batch ``x`` the network is shown two views of each sample, ``a_i = v(x_i)`` and ``b_i = v'(x_i)``
(independent random pixel dropout with probability ``drop`` and Gaussian noise of std ``noise``, drawn
from the batch's generator), stacked as ``2B`` rows. With outputs ``y_a``, ``y_b`` the loss pulls the two
views of a sample together and pushes each view away from the next sample's other view, up to a margin:

    L = 1/B sum_i [ |y_a,i - y_b,i|^2 + relu(m - |y_a,i - y_b,i+1|^2) ]        (i + 1 modulo B)

    dL/dy_a,i = 2/B [ (y_a,i - y_b,i) - [m > n_i] (y_a,i - y_b,i+1) ],        n_i = |y_a,i - y_b,i+1|^2
    dL/dy_b,j = 2/B [ -(y_a,j - y_b,j) + [m > n_{j-1}] (y_a,j-1 - y_b,j) ]

a squared-distance form of the contrastive hinge losses of Hadsell, Chopra & LeCun 2006 (and, with L1
distances and a stored anchor, of Tang et al. 2022). The gradient is written in closed form (tested equal
to autograd); any credit method that carries ``dL/dy`` down (Backprop, feedback alignment) trains with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurolearn.describe import param, register
from neurolearn.networks import keep_mask
from neurolearn.objectives import Objective, OutputError


@register("objective", "paired_views")
@dataclass(frozen=True)
class PairedViews(Objective):
    """Two views per sample; pull views of one sample together, push others apart (module docstring)."""

    margin: float = param(1.0, low=0.0, low_open=True, help="m: squared distance beyond which negatives stop")
    drop: float = param(0.2, low=0.0, high=1.0, high_open=True, help="pixel dropout of each view")
    noise: float = param(0.1, low=0.0, help="std of the Gaussian noise of each view")

    def present(self, x, labels, generator=None):
        """``[v(x); v'(x)]``: two independently augmented views of every sample (``2B`` rows)."""
        def view():
            v = x if self.drop == 0 else x * keep_mask(x.shape, 1 - self.drop, generator, x.device)
            if self.noise:
                v = v + self.noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            return v

        both = torch.cat([view(), view()])
        return both, (None if labels is None else torch.cat([labels, labels]))

    def error(self, y, state=None, mask=None, labels=None) -> OutputError:
        """``L`` and ``dL/dy`` of the module docstring for ``y = [y_a; y_b]`` (``mask``: output dropout)."""
        B = y.shape[0] // 2
        a, b = y[:B], y[B:]
        pos = a - b
        neg = a - b.roll(-1, 0)                      # a_i against b_{i+1}
        n = (neg * neg).sum(1)
        active = (n < self.margin).to(y.dtype)[:, None]
        loss = ((pos * pos).sum() + torch.relu(self.margin - n).sum()) / B
        ga = 2.0 / B * (pos - active * neg)
        gb = 2.0 / B * (-pos + (active * neg).roll(1, 0))
        grad = torch.cat([ga, gb])
        return OutputError(loss=loss, grad=grad if mask is None else grad * mask)
