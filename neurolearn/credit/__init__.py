"""Credit assignment: how the error reaches every synapse (DESIGN.md section 3)."""

from .backprop import Backprop
from .base import CreditMethod
from .equilibrium import EquilibriumProp

__all__ = ["CreditMethod", "Backprop", "EquilibriumProp"]
