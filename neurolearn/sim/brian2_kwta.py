"""The one Brian2 k-winners-take-all circuit: excitatory cells with lateral inhibition through an
inhibitory population, written as equations with units and built by :func:`build_kwta_circuit`.

Every Brian2 kWTA network of neurolearn is this circuit: the spiking KWTA circuit
(:func:`neurolearn.circuits.kwta_spiking.spiking_kwta`), the converted network's competition
(:class:`neurolearn.sim.brian2_sim.Brian2Network` with ``kwta_k``; without it only the excitatory
cells are built) and the network that learns in Brian2 (:class:`neurolearn.sim.brian2_learning.Brian2KWTALearner`).
They differ only in the values of the namespace and in what drives the excitatory cells.

Excitatory cells (``blocks`` independent circuits of ``n`` cells each; LIF with an adaptive threshold,
Diehl & Cook 2015):

    dv/dt = drive - leak v                          (volt)
    dtheta/dt = -theta / tau_theta                  (threshold offset in units of v_th)
    spike when v > v_th (1 + theta), at most once per refractory period t_ref;
    reset v = 0 ("zero") or v -= v_th ("subtract");  theta += theta_plus

(the membrane keeps integrating during ``t_ref``: Brian2's ``unless refractory`` would also drop the
synaptic input that arrives in the step of a spike, which reset by subtraction must keep).

``drive`` (volt/second) is a per-cell constant; input synapses (``TRANSMIT_*``: ``v_post += w_unit w``,
or a plasticity rule's own equations) add jumps. One inhibitory cell per block counts the
excitatory spikes of its block,

    du/dt = -inh_leak u,    on an excitatory spike:  u += 1 - count_once fired;  fired = 1
    spike when u > k_winners - 1/2;   reset u = u_reset

(``count_once = 1``: each excitatory cell counts once, the k-th *distinct* cell triggers; ``u_reset``
a large negative number: the inhibitory cell fires once per trial; ``u_reset = 0`` with a leak: it fires
again after every further k spikes within about ``1 / inh_leak``), and its spike hyperpolarises every
excitatory cell of the block, ``v -= inhibition``: the cells that fired first are the k winners
(lateral inhibition through an inhibitory population; Maass 2000, Diehl & Cook 2015).

The equations are module-level strings; every parameter is a name resolved in the namespace, whose
values carry Brian2 units, so Brian2's unit checking applies: :func:`check_units` (called by every
builder here before any simulation) raises Brian2's ``DimensionMismatchError`` when a value has the
wrong unit (a time constant given as a plain number, an inhibition in amperes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import ParameterError, check_choice, check_int

EXCITATORY = """
dv/dt = drive - leak * v : volt
dtheta/dt = -theta / tau_theta : 1
drive : volt / second (constant)
"""
THRESHOLD = "v > v_th * (1 + theta)"
RESETS = {"zero": "v = 0 * volt\ntheta += theta_plus", "subtract": "v -= v_th\ntheta += theta_plus"}
REFRACTORY = "t_ref"

INHIBITORY = "du/dt = -inh_leak * u : 1"
INHIBITORY_THRESHOLD = "u > k_winners - 0.5"
INHIBITORY_RESET = "u = u_reset"
COUNT_MODEL = "fired : 1"
COUNT_ON_PRE = "u_post += 1 - count_once * fired\nfired = 1"
INHIBIT_ON_PRE = "v_post -= inhibition"

TRANSMIT_MODEL = "w : 1"
TRANSMIT_ON_PRE = "v_post += w_unit * w"

EXCITATORY_NAMES = ("v_th", "leak", "t_ref", "theta_plus", "tau_theta")
INHIBITORY_NAMES = ("k_winners", "inh_leak", "u_reset", "count_once", "inhibition")
METHODS = ("exact", "euler")
V_TH = 1e-3  # volt: the excitatory threshold of the circuits built here (weights and drives are in its units)
SILENCE = 1e9  # inhibition (in units of v_th) and -u_reset that silence for the rest of a trial: out of reach


def quiet_brian2():
    """Import Brian2 quietly: console log level ERROR and its dependencies' deprecation warnings off."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module="brian2")
    warnings.filterwarnings("ignore", message=".*deprecated.*", module="brian2")
    import brian2 as b2

    b2.BrianLogger.console_handler.setLevel("ERROR")
    return b2


@dataclass
class KWTACircuit:
    """The Brian2 objects of :func:`build_kwta_circuit` and the namespace they resolve names in.

    ``excitatory`` (``blocks * n`` cells, block ``b`` is cells ``b n ... (b + 1) n - 1``), and with
    inhibition ``inhibitory`` (one cell per block), ``to_inhibitory`` and ``inhibition`` (synapses);
    ``objects`` lists them all for a ``Network``.
    """

    namespace: dict
    excitatory: object
    inhibitory: object = None
    to_inhibitory: object = None
    inhibition: object = None

    @property
    def objects(self) -> list:
        """Every Brian2 object of the circuit (to add to a ``Network``)."""
        return [o for o in (self.excitatory, self.inhibitory, self.to_inhibitory, self.inhibition) if o is not None]


def build_kwta_circuit(n: int, namespace: dict, *, blocks: int = 1, inhibit: bool = True, reset: str = "zero",
                       method: str = "exact", dt=None) -> KWTACircuit:
    """Build the circuit of the module docstring: ``blocks`` independent circuits of ``n`` excitatory cells.

    ``namespace`` maps the names of the equations to values with Brian2 units: ``v_th`` (volt), ``leak``
    (Hz), ``t_ref`` (second), ``theta_plus`` (1), ``tau_theta`` (second) and, with ``inhibit``, ``k_winners``
    (integer in [1, n]), ``inh_leak`` (Hz), ``u_reset`` (1), ``count_once`` (0 or 1), ``inhibition`` (volt).
    The dictionary is used as the objects' namespace (add names to it, e.g. for input synapses).
    ``reset``: ``"zero"`` or ``"subtract"``; ``method``: Brian2 integration method; ``dt``: Brian2 time step.
    Missing names are an error here; values of the wrong unit are Brian2's error (see :func:`check_units`).
    """
    b2 = quiet_brian2()
    check_int("build_kwta_circuit", "n", n, 1)
    check_int("build_kwta_circuit", "blocks", blocks, 1)
    check_choice("build_kwta_circuit", "reset", reset, tuple(RESETS))
    check_choice("build_kwta_circuit", "method", method, METHODS)
    needed = EXCITATORY_NAMES + (INHIBITORY_NAMES if inhibit else ())
    missing = [name for name in needed if name not in namespace]
    if missing:
        raise ParameterError(f"build_kwta_circuit: namespace lacks {missing} (needs {list(needed)})")
    if inhibit:
        check_int("build_kwta_circuit", "k_winners", namespace["k_winners"], 1, n)
    kw = {} if dt is None else {"dt": dt}
    E = b2.NeuronGroup(blocks * n, EXCITATORY, threshold=THRESHOLD, reset=RESETS[reset], refractory=REFRACTORY,
                       method=method, namespace=namespace, **kw)
    circuit = KWTACircuit(namespace, E)
    if inhibit:
        cells, block = np.arange(blocks * n), np.repeat(np.arange(blocks), n)
        circuit.inhibitory = b2.NeuronGroup(blocks, INHIBITORY, threshold=INHIBITORY_THRESHOLD, reset=INHIBITORY_RESET,
                                            method="exact", namespace=namespace, **kw)
        circuit.to_inhibitory = b2.Synapses(E, circuit.inhibitory, COUNT_MODEL, on_pre=COUNT_ON_PRE,
                                            namespace=namespace, **kw)
        circuit.to_inhibitory.connect(i=cells, j=block)
        circuit.inhibition = b2.Synapses(circuit.inhibitory, E, on_pre=INHIBIT_ON_PRE, namespace=namespace, **kw)
        circuit.inhibition.connect(i=block, j=cells)
    return circuit


def check_units(network) -> None:
    """Resolve and unit-check every equation of a Brian2 ``network`` without simulating (a run of
    zero duration); a value of the wrong unit raises Brian2's ``DimensionMismatchError`` itself (not
    wrapped in Brian2's ``BrianObjectException``)."""
    b2 = quiet_brian2()
    from brian2.core.base import BrianObjectException
    from brian2.units.fundamentalunits import DimensionMismatchError

    try:
        network.run(0 * b2.second, namespace={})
    except BrianObjectException as err:
        if isinstance(err.__cause__, DimensionMismatchError):
            raise err.__cause__ from None
        raise
