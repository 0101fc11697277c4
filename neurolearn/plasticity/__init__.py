"""Synapse-level plasticity rules (DESIGN.md section 3): each a frozen, registered object with a pure update."""

from .base import Factors, LowRankUpdate, apply_updates, plain_sgd
from .contrastive_hebbian import ContrastiveHebbian
from .delta import Delta
from .hebbian_kwta import KWTAHebbian

__all__ = ["Factors", "LowRankUpdate", "apply_updates", "plain_sgd", "Delta", "ContrastiveHebbian", "KWTAHebbian"]
