"""Synapse-level plasticity rules (DESIGN.md section 3): each a frozen, registered object with a pure update."""

from .base import Factors, LowRankUpdate, apply_updates, plain_sgd
from .bcm import BCM
from .contrastive_hebbian import ContrastiveHebbian
from .delta import Delta
from .equations import CompiledRule, EquationRule, RuleEquations, RuleError
from .hebbian_kwta import KWTAHebbian
from .oja import Oja
from .stdp import STDP

__all__ = ["Factors", "LowRankUpdate", "apply_updates", "plain_sgd", "Delta", "ContrastiveHebbian", "KWTAHebbian",
           "Oja", "BCM", "STDP", "RuleEquations", "CompiledRule", "EquationRule", "RuleError"]
