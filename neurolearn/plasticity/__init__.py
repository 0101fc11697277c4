"""Synapse-level plasticity rules (DESIGN.md section 3): each a frozen object with a pure update."""

from .base import LowRankUpdate, apply_updates
from .contrastive_hebbian import ContrastiveHebbian
from .delta import Delta
from .hebbian_kwta import KWTAHebbian

__all__ = ["LowRankUpdate", "apply_updates", "Delta", "ContrastiveHebbian", "KWTAHebbian"]
