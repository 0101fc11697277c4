"""Layers and networks whose weights live in plain torch modules (dense and convolutional layers behind
one protocol, :mod:`neurolearn.networks.layers`; the bidirectional dynamics of equilibrium propagation,
:mod:`neurolearn.networks.bidirectional`)."""

from .activations import ACTIVATIONS, activation, activation_derivative, times_derivative
from .feedforward import MLP, FeedForward, FeedForwardNetwork, ForwardRecord, MLPNetwork, keep_mask
from .layers import Conv, Dense, Factors, LayerOps, LowRankUpdate, ops, register_ops

__all__ = ["MLP", "FeedForward", "FeedForwardNetwork", "MLPNetwork", "ForwardRecord", "ACTIVATIONS", "activation",
           "activation_derivative", "times_derivative", "keep_mask", "Conv", "Dense", "Factors", "LowRankUpdate",
           "LayerOps", "ops", "register_ops"]
