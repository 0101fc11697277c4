"""Plots written by runs: receptive fields of the first layer."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def receptive_fields_png(weight: torch.Tensor, image_shape: tuple, path: str | Path, n: int = 64,
                         order: torch.Tensor | None = None, title: str = "") -> Path:
    """Save the first-layer weights of ``n`` cells (rows of ``weight``) as images in a grid (PNG).

    Each cell's weights ``W[i, :]`` are reshaped to ``image_shape`` and shown with a symmetric colour
    scale. ``order`` picks which cells (default: the first ``n``). Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runs import atomic_path

    idx = order[:n] if order is not None else torch.arange(min(n, weight.shape[0]))
    cols = int(math.ceil(math.sqrt(len(idx))))
    rows = int(math.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    w = weight.detach().cpu()
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx.tolist()):
        img = w[i].reshape(image_shape)
        v = float(img.abs().max()) or 1.0
        ax.imshow(img.numpy(), cmap="bwr", vmin=-v, vmax=v)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
