"""Linear classifier on frozen outputs (the second association method of Liu et al. 2024).

    p(c | y) = softmax(V dropout(y) + c)_c,   minimise cross-entropy with Adam,  lr_e = lr * g^e

Dropout 0.2 on the frozen features, Adam, exponential learning-rate decay (factor 0.9 per epoch)
and 50 epochs for BP-trained networks; linear decay from 1 to 0.5 over 100 epochs for EP-trained ones
(REFERENCES.md, Liu section; paper appendix 6.6.1, Table 7).
The unsupervised network is never updated by the labels.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_choice, check_float, check_int


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
) -> dict:
    """Train ``Linear(n -> n_classes)`` on frozen features; return train and test accuracy."""
    name = "linear_probe"
    check_int(name, "epochs", epochs, 1)
    check_float(name, "lr", lr, 0.0, low_open=True)
    check_float(name, "decay", decay, 0.0, 1.0, low_open=True)
    check_float(name, "dropout", dropout, 0.0, 1.0, high_open=True)
    check_int(name, "batch_size", batch_size, 1)
    check_choice(name, "schedule", schedule, ("exponential", "linear"))
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(nn.Dropout(dropout), nn.Linear(train_x.shape[1], n_classes))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if schedule == "exponential":
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
        else:
            sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, decay, total_iters=epochs)
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
            sched.step()
        model.eval()
        with torch.no_grad():
            train_acc = (model(train_x).argmax(1) == train_y).double().mean().item()
            test_acc = (model(test_x).argmax(1) == test_y).double().mean().item()
    finally:
        torch.random.set_rng_state(torch_state)
    return {"train": train_acc, "test": test_acc}
