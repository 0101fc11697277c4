"""Machine-checked locality of learning rules and training steps (DESIGN.md section 4).

A :class:`Contract` says what the update of synapse (i, j) may read; :func:`check` perturbs
everything else with Hypothesis-drawn states and reports each dependency it finds, in words.
See ``docs/locality.md``.
"""

from .checker import CheckerError, Report, Violation, check, draw_state, fixed_reach, forbidden_groups
from .contract import (BATCH_MODES, SIGNAL_KINDS, Cells, CellParam, Checkable, Contract, Fixed, Layer, SampleScalar,
                       Scalar, Shared, Signal, StateSpec, Trace, Weight)
from .invariance import check_batch_additivity, check_permutation_equivariance, check_scaling, permute_state
from . import reference_steps, strategies
from .modules import check_module_step, module_step_checkable
from .testing import assert_local, assert_nonlocal, single_layer

__all__ = [
    "check_module_step", "module_step_checkable",
    "Contract", "StateSpec", "Layer", "Shared", "Cells", "Trace", "CellParam", "Signal", "Weight", "Fixed", "Scalar",
    "SampleScalar", "Checkable",
    "SIGNAL_KINDS", "BATCH_MODES", "check", "Report", "Violation", "CheckerError", "draw_state", "forbidden_groups",
    "fixed_reach",
    "assert_local", "assert_nonlocal", "single_layer", "check_permutation_equivariance", "check_batch_additivity",
    "check_scaling", "permute_state", "strategies", "reference_steps",
]
