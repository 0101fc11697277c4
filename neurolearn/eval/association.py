"""Direct association: label each output cell by the class it answers most, then vote.

Liu et al. 2024, section 2.2.1 (after Querlioz et al. 2013; Diehl & Cook 2015):

    r_c,i = mean of y_i over the labelled samples of class c          (mean response per class)
    class(i) = argmax_c r_c,i      (cells that never respond get no class: -1)

Prediction for an input with responses y:

* ``"av"``:  argmax_c  mean_{i : class(i) = c} y_i      (class whose cells respond most on average)
* ``"max"``: class(argmax_i y_i) over the assigned cells   (class of the most active cell)

Works on any response: rate outputs or spike counts.
"""

from __future__ import annotations

import torch

from .._validate import check_choice, check_int

MODES = ("av", "max")


def assign_classes(responses: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class of each cell: ``argmax_c mean_{n: label_n = c} responses[n, i]``; -1 if the cell never responds.

    ``responses``: ``(N, n_cells)``; ``labels``: ``(N,)`` int in ``[0, n_classes)``.
    Returns ``(n_cells,)`` int64.
    """
    check_int("assign_classes", "n_classes", n_classes, 1)
    if responses.ndim != 2 or labels.shape != (responses.shape[0],):
        raise ValueError(
            f"assign_classes: responses must be (N, cells) and labels (N,), got {tuple(responses.shape)} "
            f"and {tuple(labels.shape)}"
        )
    r = responses.double()
    onehot = torch.nn.functional.one_hot(labels.long(), n_classes).double()  # (N, C)
    counts = onehot.sum(0).clamp_min(1.0)
    mean = (onehot.T @ r) / counts[:, None]  # (C, cells)
    cls = mean.argmax(0)
    silent = (r.abs().sum(0) == 0)
    cls[silent] = -1
    return cls


def predict_direct(responses: torch.Tensor, assignment: torch.Tensor, n_classes: int, mode: str = "av") -> torch.Tensor:
    """Predicted class per sample from ``responses (N, cells)`` and a cell ``assignment`` (see module doc)."""
    check_choice("predict_direct", "mode", mode, MODES)
    r = responses.double()
    valid = assignment >= 0
    if mode == "av":
        onehot = torch.zeros(assignment.shape[0], n_classes, dtype=torch.float64)
        onehot[valid, assignment[valid]] = 1.0
        n_per_class = onehot.sum(0)
        score = (r @ onehot) / n_per_class.clamp_min(1.0)
        score[:, n_per_class == 0] = -float("inf")  # a class with no cells cannot be predicted
        return score.argmax(1)
    masked = r.clone()
    masked[:, ~valid] = -float("inf")
    best = masked.argmax(1)
    return assignment[best].clamp_min(0)


def direct_association_accuracy(
    train_responses: torch.Tensor,
    train_labels: torch.Tensor,
    test_responses: torch.Tensor,
    test_labels: torch.Tensor,
    n_classes: int,
) -> dict:
    """Assign classes on the labelled (training) responses, return test accuracy for ``"av"`` and ``"max"``."""
    assignment = assign_classes(train_responses, train_labels, n_classes)
    out = {}
    for mode in MODES:
        pred = predict_direct(test_responses, assignment, n_classes, mode)
        out[mode] = (pred == test_labels).double().mean().item()
    return out
