"""Layers and networks whose weights live in plain torch modules."""

from .mlp import ACTIVATIONS, MLP, activation, activation_derivative, times_derivative

__all__ = ["MLP", "ACTIVATIONS", "activation", "activation_derivative", "times_derivative"]
