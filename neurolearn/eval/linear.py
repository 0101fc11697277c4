"""Linear classifier on frozen features (Liu et al. 2024's second association method; Tang et al. 2022's probe).

    p(c | y) = softmax(V dropout(y) + c)_c,   minimise cross-entropy with Adam,  lr_e = lr * s(e)

Liu et al. 2024 (REFERENCES.md, Liu section; paper appendix 6.6.1, Table 7): dropout 0.2 on the frozen
features, Adam lr 0.1, exponential decay ``s(e) = g^e`` (g = 0.9), 50 epochs, batch 128 for BP-trained
networks; linear decay ``s(e) = 1 + (g - 1) e / E`` from 1 to 0.5 over 100 epochs for EP-trained ones.
Tang et al. 2022 (METHODS.md 2.3): no dropout, Adam lr 1e-3 without schedule (``s(e) = 1``), batch 500,
on the flattened last conv layer. The network producing the features is never updated by the labels.

``extra_tests`` evaluates the same trained classifier on further test sets (e.g. a transformed test
set, Tang et al. 2022 Table 4): accuracy ``mean_b [argmax_c p(c | y_b) = label_b]`` on each.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import ParameterError, check_choice, check_float, check_int

#: learning-rate schedules of the probe
SCHEDULES = ("exponential", "linear", "none")


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    epochs: int = 50,
    lr: float = 0.1,
    decay: float = 0.9,
    schedule: str = "exponential",
    dropout: float = 0.2,
    batch_size: int = 128,
    seed: int = 0,
    extra_tests: dict | None = None,
) -> dict:
    """Train ``Linear(n -> n_classes)`` on frozen features; return ``{"train", "test"}`` accuracy and, for
    every ``name: (x, y)`` of ``extra_tests``, ``name``'s accuracy (see module docstring)."""
    name = "linear_probe"
    check_int(name, "epochs", epochs, 1)
    check_float(name, "lr", lr, 0.0, low_open=True)
    check_float(name, "decay", decay, 0.0, 1.0, low_open=True)
    check_float(name, "dropout", dropout, 0.0, 1.0, high_open=True)
    check_int(name, "batch_size", batch_size, 1)
    check_choice(name, "schedule", schedule, SCHEDULES)
    extra_tests = dict(extra_tests or {})
    for key, pair in extra_tests.items():
        if key in ("train", "test") or not isinstance(pair, tuple) or len(pair) != 2 or pair[0].ndim != 2 \
                or pair[0].shape[1] != train_x.shape[1] or pair[1].shape != (pair[0].shape[0],):
            raise ParameterError(f"{name}: extra_tests[{key!r}] must be a pair (x, y) with x of shape (N, {train_x.shape[1]}) "
                                 "and y of shape (N,), under a name other than 'train' and 'test'")
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        # no dropout module at p = 0: it would still draw a mask per batch (most of a small probe's time)
        model = nn.Sequential(nn.Dropout(dropout) if dropout else nn.Identity(), nn.Linear(train_x.shape[1], n_classes))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if schedule == "exponential":
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
        elif schedule == "linear":
            sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, decay, total_iters=epochs)
        else:
            sched = None
        n = train_x.shape[0]
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if sched is not None:
                sched.step()
        model.eval()
        with torch.no_grad():
            out = {"train": (model(train_x).argmax(1) == train_y).double().mean().item(),
                   "test": (model(test_x).argmax(1) == test_y).double().mean().item()}
            for key, (x, y) in extra_tests.items():
                out[key] = (model(x).argmax(1) == y).double().mean().item()
    finally:
        torch.random.set_rng_state(torch_state)
    return out
