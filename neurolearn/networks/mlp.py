"""The dense network :class:`MLP` (defined in :mod:`neurolearn.networks.feedforward`) and the activation
functions (:mod:`neurolearn.networks.activations`), importable from here as well."""

from .activations import ACTIVATIONS, activation, activation_derivative, times_derivative
from .feedforward import MLP, keep_mask

__all__ = ["MLP", "ACTIVATIONS", "activation", "activation_derivative", "times_derivative", "keep_mask"]
