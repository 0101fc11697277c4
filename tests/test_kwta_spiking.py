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


def _namespace(b2, **change):
    """A complete, correct namespace for the circuit builder (values with Brian2 units)."""
    ns = {"v_th": 1 * b2.mV, "leak": 50 * b2.Hz, "t_ref": 2 * b2.ms, "theta_plus": 0.0, "tau_theta": 1 * b2.second,
          "k_winners": 2, "inh_leak": 0 * b2.Hz, "u_reset": -1e9, "count_once": 1.0, "inhibition": 50 * b2.mV}
    ns.update(change)
    return ns


def test_circuit_builder_checks_units_with_brian2():
    """Brian2's unit checking is active on the one circuit builder: a parameter with the wrong unit
    (a time constant as a plain number, an inhibition in amperes, a leak in seconds) raises Brian2's
    DimensionMismatchError before any simulation; the correct namespace passes and the circuit runs."""
    import pytest
    from brian2.units.fundamentalunits import DimensionMismatchError

    from neurolearn.sim.brian2_kwta import build_kwta_circuit, check_units, quiet_brian2

    b2 = quiet_brian2()
    b2.prefs.codegen.target = "numpy"
    for wrong in ({"tau_theta": 1.0}, {"inhibition": 50 * b2.amp}, {"leak": 20 * b2.ms}, {"v_th": 1.0}):
        circuit = build_kwta_circuit(4, _namespace(b2, **wrong), dt=0.1 * b2.ms)
        with pytest.raises(DimensionMismatchError):
            check_units(b2.Network(*circuit.objects))
    circuit = build_kwta_circuit(4, _namespace(b2), dt=0.1 * b2.ms)
    circuit.excitatory.drive = np.array([4.0, 3.0, 2.0, 1.5]) * b2.mV / (20 * b2.ms)
    mon = b2.SpikeMonitor(circuit.excitatory)
    net = b2.Network(mon, *circuit.objects)
    check_units(net)
    net.run(50 * b2.ms, namespace={})
    assert list(np.asarray(mon.count[:]) > 0) == [True, True, False, False]  # k = 2: the two strongest drives
    with pytest.raises(ValueError, match="lacks"):
        build_kwta_circuit(4, {k: v for k, v in _namespace(b2).items() if k != "inhibition"})
    with pytest.raises(ValueError, match="k_winners"):
        build_kwta_circuit(4, _namespace(b2, k_winners=5))


def test_spiking_kwta_refuses_non_finite_drives_and_coarse_steps():
    import pytest

    d = np.random.default_rng(0).random((2, 5))
    bad = d.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="drives must be finite"):
        spiking_kwta(bad, 2)
    with pytest.raises(ValueError, match="H must be finite"):
        spiking_kwta(d, 2, H=np.array([0, 0, np.inf, 0, 0]))
    with pytest.raises(ValueError, match="dt = 0.03 s >= tau = 0.02 s"):
        spiking_kwta(d, 2, dt=0.03, duration=0.1)
    assert spiking_kwta(d, 2, dt=0.01e-3).shape == (2, 5)  # a legal finer step runs
