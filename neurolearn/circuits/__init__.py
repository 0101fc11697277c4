"""Micro-circuits with a rate (torch) realisation here and a spiking one in ``*_spiking`` modules."""

from .homeostasis import Homeostasis
from .kwta import KWTA, kwta

__all__ = ["KWTA", "kwta", "Homeostasis"]
