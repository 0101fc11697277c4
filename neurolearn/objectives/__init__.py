"""Objectives: the error or target at the top of the network (DESIGN.md section 3)."""

from ..circuits.kwta import PATHWAY as KWTA_PATHWAY
from ..locality.contract import Cells, Checkable, Contract, Layer, Signal, StateSpec, Weight
from ..networks.activations import activation, activation_derivative
from ..plasticity.delta import Delta
from .base import Objective, OutputError, TargetObjective
from .self_defined import SelfDefinedTarget
from .supervised import SupervisedTarget

__all__ = ["Objective", "TargetObjective", "OutputError", "SelfDefinedTarget", "SupervisedTarget",
           "self_defined_delta_checkable"]


def self_defined_delta_checkable(n_pre: int, n_post: int, k: int = 1, activation_name: str = "hardsigmoid") -> Checkable:
    """One layer trained by the self-defined target with the delta rule, as a checkable update.

        y = f(u),   e_i = (y_i - d_i) f'(u_i),   g_ij = sum_b e_bi x_bj           (Liu et al. 2024)

    The winners ``d = kWTA(y - H)`` are computed by the KWTA circuit and arrive at each output cell
    as a ``neuron_signal`` through the declared pathway ``"KWTA"``; the rule itself reads only its
    pre cell, its post cell's current ``u_i`` and that signal: local. (``k`` is recorded in the name;
    the winners are part of the drawn state.)
    """
    spec = StateSpec(
        populations={"input": n_pre, "output": n_post},
        layers=(Layer("W", post="output", pre="input"),),
        entries={"x": Cells("input"), "u": Cells("output", "current"), "d": Signal("output", KWTA_PATHWAY), "W": Weight("W")},
    )
    contract = Contract("SelfDefinedTarget+Delta", allows={"pre", "post", "neuron_signal"}, pathways=(KWTA_PATHWAY,))

    def fn(s):
        u = s["u"]
        e = (activation(activation_name, u) - s["d"]) * activation_derivative(activation_name, u)
        return {"W": Delta.update(s["x"], e)}

    return Checkable(f"SelfDefinedTarget(k={k}) + Delta", spec, {"W": contract}, fn)
