"""The checks every spiking simulation makes before it simulates anything (snnTorch and Brian2 alike).

A discrete-time simulation of ``tau dv/dt = -v + R I`` with step ``dt`` only means something when

* every number it is given is finite: a NaN weight, bias, current or input would otherwise pass
  through comparisons like ``v > v_th`` as "no spike" and come out as a finite spike rate;
* the step resolves the membrane time constant, ``dt < tau``: with ``dt >= tau`` the membrane forgets
  its state within one step (``beta = exp(-dt / tau) <= 1/e``) and a supra-threshold cell fires at every
  step the refractory period allows, whatever the current (Gerstner & Kistler 2002, Sec. 4.1 on the
  integration of LIF cells; the usual rule is ``dt << tau``). Converted networks give ``tau_m`` in steps,
  so this is ``tau_m > 1`` step;
* it runs for at least one step: a spike rate ``count / steps`` over zero steps is ``0 / 0``.

:func:`check_spiking` makes all three; both simulators and every Brian2 model here call it first.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import ParameterError, check_int


def _non_finite(values) -> tuple[int, object]:
    """(number of non-finite entries, first such entry) of an array, tensor or number."""
    try:
        import torch

        if isinstance(values, torch.Tensor):
            bad = ~torch.isfinite(values.detach())
            n = int(bad.sum())
            return n, (values.detach()[bad].flatten()[0].item() if n else None)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(values, dtype=float)
    bad = ~np.isfinite(arr)
    n = int(bad.sum())
    return n, (arr[bad].flat[0] if n else None)


def check_spiking(owner: str, *, dt: float | None = None, tau: float | None = None, steps: int | None = None,
                  dt_name: str = "dt", tau_name: str = "tau", unit: str = "s", **arrays) -> None:
    """Refuse a spiking simulation that would be physical nonsense (see module docstring).

    ``arrays`` (name -> array, tensor or number; ``None`` skipped): every entry must be finite, else
    the error names the array, how many entries are not finite and the first one. ``dt`` and ``tau``
    (both in ``unit``, named ``dt_name`` and ``tau_name`` in the message): ``dt < tau`` is required.
    ``steps``: an integer >= 1. Raises :class:`~neurolearn._validate.ParameterError` (a ``ValueError``).
    """
    for name, values in arrays.items():
        if values is None:
            continue
        n, first = _non_finite(values)
        if n:
            raise ParameterError(f"{owner}: {name} must be finite, got {n} non-finite value(s) (e.g. {first})")
    if dt is not None and tau is not None:
        for name, value in ((dt_name, dt), (tau_name, tau)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ParameterError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
        if not dt < tau:
            raise ParameterError(
                f"{owner}: the time step must be smaller than the membrane time constant, got {dt_name} = {dt:g} {unit} "
                f">= {tau_name} = {tau:g} {unit} (the membrane would forget its state within one step)")
    if steps is not None:
        check_int(owner, "steps", steps, 1)
