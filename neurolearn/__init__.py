"""neurolearn: biologically constrained learning, rate and spiking, with machine-checked locality."""
__version__ = "0.1.0"
