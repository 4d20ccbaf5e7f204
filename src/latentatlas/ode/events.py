"""Terminal events with gradients through the event time (implicit differentiation).

:func:`odeint_event` integrates until ``event_fn(t, y)`` changes sign and returns the event time
``t*`` and the states at ``(t0, t*)``. Gradients flow to ``y0``, ``t0`` and the parameters of
``f`` through both outputs. With ``y(t; theta)`` the solution and ``g(t, y)`` the event function,
the event time is defined implicitly by ``g(t*, y(t*; theta)) = 0``, so

    dt*/dtheta  = -(dg/dy . dy/dtheta) / (dg/dt + dg/dy . f(t*, y*)),
    dy*/dtheta  = dy/dtheta + f(t*, y*) dt*/dtheta

(``dy/dtheta`` at the fixed time t*). The solve itself (direct or adjoint) differentiates
``y(t*; theta)`` at fixed t*; :class:`_EventTime` adds the event-time terms by routing
``(dL/dt* + dL/dy* . f) * dt*/dtheta`` into the gradient of that state, as torchdiffeq does.
Parameters of ``event_fn`` itself receive no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .odeint import State, _Flatten, odeint

__all__ = ["odeint_event"]


class _EventTime(torch.autograd.Function):
    """Identity on ``(event_t, state_t (N,))``; backward adds the implicit event-time terms."""

    @staticmethod
    def forward(ctx, func, g, event_t: Tensor, state_t: Tensor):  # type: ignore[override]
        ctx.func, ctx.g = func, g
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach().clone(), state_t.detach().clone()

    @staticmethod
    def backward(ctx, grad_t: Tensor | None, grad_state: Tensor | None):  # type: ignore[override]
        event_t, state_t = ctx.saved_tensors
        if grad_state is None:
            grad_state = torch.zeros_like(state_t)
        if grad_t is None:
            grad_t = torch.zeros_like(event_t)
        with torch.enable_grad():
            tt = event_t.detach().requires_grad_(True)
            yy = state_t.detach().requires_grad_(True)
            c = ctx.g(tt, yy)
            dcdt, dcdy = torch.autograd.grad(c, (tt, yy), allow_unused=True)
        with torch.no_grad():
            fval = ctx.func(event_t.detach(), state_t.detach())
            dcdt = torch.zeros_like(event_t) if dcdt is None else dcdt
            dcdy = torch.zeros_like(state_t) if dcdy is None else dcdy
            total_dcdt = dcdt + torch.dot(dcdy, fval).to(dcdt.dtype)
            total_t = grad_t + torch.dot(grad_state, fval).to(grad_t.dtype)
            grad_y = grad_state - dcdy * (total_t / total_dcdt).to(dcdy.dtype)
        return None, None, None, grad_y


def odeint_event(
    f: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor | float,
    event_fn: Callable[[Tensor, State], Tensor],
    *,
    reverse_time: bool = False,
    t_max: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, State]:
    """Integrate from ``(t0, y0)`` until ``event_fn`` changes sign; differentiable event time.

    Args:
        f: vector field ``f(t, y)`` (as :func:`~latentatlas.ode.odeint`).
        y0: initial state (tensor of any shape, or tuple of tensors).
        t0: initial time (0-dim tensor or number; may require grad).
        event_fn: ``event_fn(t, y) -> tensor``; the event is the first time any component
            changes sign (components that are zero at ``t0`` trigger at once).
        reverse_time: integrate towards decreasing time.
        t_max: bound of the search (default +-inf); no event before it raises
            :class:`~latentatlas.ode.ODEError`.
        **kwargs: passed to :func:`~latentatlas.ode.odeint` (``method``, ``rtol``, ``atol``,
            ``adjoint``, ``params``, step options, ``return_stats``...).

    Returns:
        ``(event_t 0-dim, states)`` (then the stats if ``return_stats``) with ``states`` shaped (2, *y0.shape) (a tuple for a tuple
        state): y at ``t0`` and at ``event_t``. Gradients of both flow to ``y0``, ``t0`` and the
        parameters of ``f`` (with ``adjoint=True``: the ``params``).
    """
    if not callable(event_fn):
        raise ValueError(f"event_fn: expected a callable (t, y) -> tensor, got {event_fn!r}")
    flat = _Flatten(y0)
    like = (tuple(y0) if flat.is_tuple else (y0,))[0]
    t0 = torch.as_tensor(t0, dtype=like.dtype, device=like.device)
    if t0.numel() != 1:
        raise ValueError(f"t0: expected one time, got shape {tuple(t0.shape)}")
    t0 = t0.reshape(())
    bound = t_max if t_max is not None else (-math.inf if reverse_time else math.inf)
    t = torch.stack([t0, torch.as_tensor(bound, dtype=t0.dtype, device=t0.device)])
    return_stats = bool(kwargs.pop("return_stats", False))
    event_t, sol, stats = odeint(f, y0, t, event_fn=event_fn, return_stats=True, **kwargs)
    if not torch.is_grad_enabled():
        return (event_t, sol, stats) if return_stats else (event_t, sol)
    with torch.no_grad():
        sign0 = torch.sign(torch.as_tensor(event_fn(t0.detach(), y0)).reshape(-1))

    def g(tt: Tensor, y: Tensor) -> Tensor:
        return (torch.as_tensor(event_fn(tt, flat.unflatten(y))).reshape(-1) * sign0).min()

    func = flat.flat_func(f)
    last = flat.flatten(tuple(s[-1] for s in sol) if flat.is_tuple else sol[-1])
    event_t, last = _EventTime.apply(func, g, event_t, last)
    last_s = flat.unflatten(last)
    if flat.is_tuple:
        sol = tuple(torch.cat([s[:-1], ls[None]]) for s, ls in zip(sol, last_s))
    else:
        sol = torch.cat([sol[:-1], last_s[None]])
    return (event_t, sol, stats) if return_stats else (event_t, sol)
