"""The spiking KWTA circuit (Brian2) agrees with the rate kWTA when the k-th and (k+1)-th drives are apart."""

import numpy as np
import torch

from neurolearn.circuits.kwta import kwta
from neurolearn.circuits.kwta_spiking import spiking_kwta


def _drives(trials, n, k, margin, rng):
    """Random drives whose k-th and (k+1)-th largest differ by at least ``margin`` x their range."""
    out = []
    while len(out) < trials:
        d = rng.random(n)
        s = np.sort(d)[::-1]
        if s[k - 1] - s[k] >= margin * (s[0] - s[-1]):
            out.append(d)
    return np.array(out)


def test_spiking_winners_equal_rate_topk_with_margin():
    """200 trials, 20 cells, k = 3, margin 5% of the range, random H: >= 95% of trials agree exactly."""
    rng = np.random.default_rng(0)
    k, n = 3, 20
    H = rng.normal(0, 0.05, n)
    d = _drives(200, n, k, 0.05, rng) + H  # the competition is on d - H
    spk = spiking_kwta(d, k, H)
    rate = kwta(torch.tensor(d), k, torch.tensor(H)).numpy().astype(int)
    agree = (spk == rate).all(1).mean()
    assert agree >= 0.95, agree
    assert (spk.sum(1) >= k).mean() >= 0.95
    # H matters: a circuit that ignored the thresholds (top-k of d) would miss the rate winners often
    ignoring_h = kwta(torch.tensor(d), k).numpy().astype(int)
    assert (ignoring_h == rate).all(1).mean() < 0.8


def test_without_margin_the_circuit_can_disagree():
    """Near-ties (margin 1e-5 of the range) make extra cells fire in the same step: agreement drops."""
    rng = np.random.default_rng(1)
    k, n = 3, 20
    d = rng.random((100, n))
    order = np.argsort(-d, 1)
    for t in range(100):  # put the (k+1)-th cell a hair below the k-th
        d[t, order[t, k]] = d[t, order[t, k - 1]] - 1e-7
    spk = spiking_kwta(d, k)
    rate = kwta(torch.tensor(d), k).numpy().astype(int)
    assert (spk == rate).all(1).mean() < 0.95


def test_spiking_kwta_parameter_errors_name_the_parameter():
    import pytest

    d = np.random.default_rng(0).random((2, 5))
    for kw, name in (({"tau": 0}, "tau"), ({"dt": -1}, "dt"), ({"inhibition": 0}, "inhibition"),
                     ({"H": np.zeros(4)}, "H must have one threshold per cell")):
        with pytest.raises(ValueError, match=name):
            spiking_kwta(d, 2, **kw)
