"""Test-wide setup: the tests read MNIST through ``$NEUROLEARN_DATA``, pointed at the project's shared data
folder (``../shared/data`` beside the checkout) when the caller has not set it. The library itself never
searches project paths (:mod:`neurolearn.data.locate`)."""

import os
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("NEUROLEARN_DATA") and (_SHARED / "mnist").is_dir():
    os.environ["NEUROLEARN_DATA"] = str(_SHARED)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per test worker: `pytest -n 2` on two cores would otherwise oversubscribe them
    import torch

    torch.set_num_threads(1)
