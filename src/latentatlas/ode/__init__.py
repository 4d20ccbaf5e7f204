"""ODE solvers in PyTorch: fixed-step and adaptive Runge–Kutta, dense output, the adjoint method.

    import torch, latentatlas as la
    ys = la.ode.odeint(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))  # (5, 3)

- :func:`odeint` — ``dopri5`` (adaptive Dormand–Prince 5(4), dense output), ``euler``,
  ``midpoint``, ``rk4``; tensor or tuple states; forwards or backwards in time; ``adjoint=True``
  for gradients in memory independent of the number of steps.
- :class:`ODEStats` — function evaluations and steps of a solve (``return_stats=True``).
- Errors: :class:`ODEMaxStepsError`, :class:`ODEStepSizeError`, :class:`ODENonFiniteError`
  (all subclasses of :class:`ODEError`, a ``RuntimeError``).
"""

from __future__ import annotations

from .odeint import odeint
from .solvers import (
    METHODS,
    ODEError,
    ODEMaxStepsError,
    ODENonFiniteError,
    ODEStats,
    ODEStepSizeError,
)

__all__ = [
    "METHODS",
    "ODEError",
    "ODEMaxStepsError",
    "ODENonFiniteError",
    "ODEStats",
    "ODEStepSizeError",
    "odeint",
]
