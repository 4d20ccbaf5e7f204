"""ODE solvers in PyTorch: fixed-step and adaptive Runge–Kutta, dense output, events, the adjoint.

    import torch, latentatlas as la
    ys = la.ode.odeint(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))  # (5, 3)

- :func:`odeint` — adaptive ``dopri5`` (default), ``dopri8``, ``bosh3``, ``fehlberg2``,
  ``adaptive_heun``; fixed-step ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4`` (one
  tableau each, :data:`METHODS`); tensor (any shape, 0-dim too) or tuple states; forwards or
  backwards in time; step options (``step_size``, ``first_step``, ``min_step``/``max_step``,
  ``grid_constructor``, ``step_t``/``jump_t``, ``perturb``, ``norm``); terminal events
  (``event_fn``); ``adjoint=True`` for gradients in memory independent of the number of steps.
- :func:`odeint_event` — integrate until an event, with gradients through the event time.
- :mod:`latentatlas.ode.torchdiffeq` — torchdiffeq's API (``odeint``, ``odeint_adjoint``,
  ``odeint_event``) on top of these, for a one-import switch.
- :class:`ODEStats` — function evaluations and steps of a solve (``return_stats=True``).
- Errors: :class:`ODEMaxStepsError`, :class:`ODEStepSizeError`, :class:`ODENonFiniteError`
  (all subclasses of :class:`ODEError`, a ``RuntimeError``; a missing event raises ODEError).
"""

from __future__ import annotations

from .events import odeint_event
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
    "odeint_event",
]
