"""Drop-in replacement for torchdiffeq's API: ``from latentatlas.ode.torchdiffeq import odeint``.

Same signatures and defaults as torchdiffeq 0.2 (``rtol=1e-7``, ``atol=1e-9``, ``method=None`` ->
``"dopri5"``, ``options`` dict, ``event_fn``), backed by :func:`latentatlas.ode.odeint`. Supported:

- methods ``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun`` (adaptive) and
  ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4`` (fixed grid; default grid ``t``);
- options ``step_size``, ``first_step``, ``min_step``, ``max_step``, ``max_num_steps``,
  ``safety``, ``ifactor``, ``dfactor``, ``grid_constructor``, ``step_t``, ``jump_t``,
  ``perturb``, ``norm``, ``interp`` (accepted: every requested time is hit exactly, so no
  interpolation happens), ``dtype`` (only float64: step control runs in python floats);
- :func:`odeint_adjoint` with ``adjoint_rtol/atol/method/options/params`` (``norm="seminorm"``
  in ``adjoint_options``), :func:`odeint_event` with implicit gradients of the event time.

- callbacks ``func.callback_step``, ``callback_accept_step``, ``callback_reject_step`` (forward
  solve; fixed-grid methods call only ``callback_step``);
- per-element (tensor shaped like ``y0``) and per-component (tuple) tolerances.

Not offered (raise ``NotImplementedError`` naming it): the Adams methods (``explicit_adams``,
``implicit_adams``, ``fixed_adams``), ``scipy_solver``, the adjoint callbacks
(``callback_step_adjoint`` ...), a callable adjoint norm.

Differences by design: rk4 is the classical tableau (torchdiffeq's is the 3/8 rule; both 4th
order); with ``step_size`` the last step before each requested time is clipped onto it instead of
interpolating linearly; bosh3's dense output is cubic Hermite (torchdiffeq: a quartic with a
2nd-order midpoint). Failures raise typed errors (``ODEMaxStepsError`` ...) instead of
``AssertionError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from . import events as _events
from .odeint import State
from .odeint import odeint as _odeint
from .solvers import METHODS

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]

_UNSUPPORTED_METHODS = ("explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver")
_RENAMED = {"max_num_steps": "max_steps"}
_ACCEPTED = (
    "step_size", "first_step", "min_step", "max_step", "max_num_steps", "safety", "ifactor",
    "dfactor", "grid_constructor", "step_t", "jump_t", "perturb", "norm", "interp", "dtype",
)
_CALLBACKS = (
    "callback_step", "callback_accept_step", "callback_reject_step",
    "callback_step_adjoint", "callback_accept_step_adjoint", "callback_reject_step_adjoint",
)


def _method(method: str | None, where: str = "method") -> str:
    if method is None:
        return "dopri5"
    if method in _UNSUPPORTED_METHODS:
        raise NotImplementedError(
            f"{where}={method!r} is not offered by latentatlas.ode (available: {sorted(METHODS)})"
        )
    if method not in METHODS:
        raise ValueError(f"{where}: expected one of {sorted(METHODS)}, got {method!r}")
    return method


def _options(options: dict[str, Any] | None, where: str = "options") -> dict[str, Any]:
    """torchdiffeq options -> keyword arguments of :func:`latentatlas.ode.odeint`."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"{where}: expected a dict, got {type(options).__name__}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in _ACCEPTED:
            raise NotImplementedError(
                f"{where}[{key!r}] is not offered by latentatlas.ode (offered: {list(_ACCEPTED)})"
            )
        if key == "interp":
            if value not in ("linear", "cubic"):
                raise ValueError(f"{where}['interp']: expected 'linear' or 'cubic', got {value!r}")
            continue  # requested times are hit exactly: nothing to interpolate
        if key == "dtype":
            if value != torch.float64:
                raise NotImplementedError(
                    f"{where}['dtype']={value}: only torch.float64 time control is offered"
                )
            continue
        out[_RENAMED.get(key, key)] = value
    return out


def _callbacks(func: Any) -> dict[str, Any]:
    """``func.callback_step`` etc. -> ``{"callbacks": {...}}`` for :func:`latentatlas.ode.odeint`
    (forward solve); the adjoint callbacks are not offered."""
    for name in _CALLBACKS[3:]:
        if hasattr(func, name):
            raise NotImplementedError(
                f"func.{name}: callbacks of the adjoint solve are not offered by latentatlas.ode"
            )
    cbs = {name[len("callback_"):]: getattr(func, name) for name in _CALLBACKS[:3]
           if hasattr(func, name)}
    return {"callbacks": cbs} if cbs else {}


def _event_bound(t: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    if t.dim() != 1 or len(t) != 2:
        raise ValueError(
            f"t: with event_fn, expected len(t) == 2 (t0 and a later time giving the direction), "
            f"got shape {tuple(t.shape)}"
        )
    sign = 1.0 if float(t[1]) > float(t[0]) else -1.0
    return torch.stack([t[0], torch.full_like(t[0].detach(), sign * float("inf"))])


def odeint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
) -> Any:
    """torchdiffeq's ``odeint``: y at every time of ``t`` ((T, *y0.shape), tuple for tuples).

    With ``event_fn``: ``t`` has two times (``t[1]`` only sets the direction) and the result is
    ``(event_t, states (2, ...))``.
    """
    kwargs = {**_options(options), **_callbacks(func)}
    if event_fn is not None:
        t = _event_bound(t)
    return _odeint(func, y0, t, method=_method(method), rtol=rtol, atol=atol,
                   event_fn=event_fn, **kwargs)


def odeint_adjoint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
) -> Any:
    """torchdiffeq's ``odeint_adjoint``: as :func:`odeint`, gradients by the adjoint method.

    ``adjoint_params`` default to ``func.parameters()`` (``func`` must then be an
    ``nn.Module``); the backward solve uses ``adjoint_*`` (default: the forward settings).
    """
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError(
            "adjoint_params: func is not an nn.Module, so its parameters cannot be found; pass "
            "adjoint_params explicitly (adjoint_params=() if there are none)"
        )
    if adjoint_method is not None and adjoint_method != method and options is not None \
            and adjoint_options is None:
        raise ValueError(
            "adjoint_options: adjoint_method differs from method and options were given, so "
            "adjoint_options cannot be inferred from them; pass adjoint_options too"
        )
    method = _method(method)
    kwargs = {**_options(options), **_callbacks(func)}
    b_method = _method(adjoint_method, "adjoint_method") if adjoint_method is not None else None
    b_options = _options(adjoint_options, "adjoint_options") if adjoint_options is not None \
        else None
    if event_fn is not None:
        t = _event_bound(t)
    params = list(func.parameters()) if adjoint_params is None else list(adjoint_params)
    return _odeint(
        func, y0, t, method=method, rtol=rtol, atol=atol, adjoint=True, params=params,
        event_fn=event_fn, adjoint_method=b_method, adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol, adjoint_options=b_options, **kwargs,
    )


def odeint_event(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: Tensor,
    *,
    event_fn: Callable[[Tensor, State], Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    **kwargs: Any,
) -> tuple[Tensor, State]:
    """torchdiffeq's ``odeint_event``: ``(event_t, states (2, ...))`` with gradients through the
    event time (implicit differentiation). ``odeint_interface`` is this module's :func:`odeint`
    or :func:`odeint_adjoint`; ``kwargs`` are theirs (``rtol``, ``method``, ``options``, ...)."""
    if odeint_interface is odeint:
        adjoint: dict[str, Any] = {}
    elif odeint_interface is odeint_adjoint:
        params = kwargs.pop("adjoint_params", None)
        if params is None and not isinstance(func, nn.Module):
            raise ValueError(
                "adjoint_params: func is not an nn.Module, so its parameters cannot be found; "
                "pass adjoint_params explicitly"
            )
        adjoint = {
            "adjoint": True,
            "params": list(func.parameters()) if params is None else list(params),
            "adjoint_rtol": kwargs.pop("adjoint_rtol", None),
            "adjoint_atol": kwargs.pop("adjoint_atol", None),
        }
        b_method = kwargs.pop("adjoint_method", None)
        b_options = kwargs.pop("adjoint_options", None)
        adjoint["adjoint_method"] = _method(b_method, "adjoint_method") if b_method else None
        adjoint["adjoint_options"] = _options(b_options, "adjoint_options") \
            if b_options is not None else None
    else:
        raise NotImplementedError(
            "odeint_interface: only latentatlas.ode.torchdiffeq.odeint / odeint_adjoint are "
            f"offered, got {odeint_interface!r}"
        )
    method = _method(kwargs.pop("method", None))
    options = {**_options(kwargs.pop("options", None)), **_callbacks(func)}
    rtol = kwargs.pop("rtol", 1e-7)
    atol = kwargs.pop("atol", 1e-9)
    if kwargs:
        raise ValueError(f"odeint_event: unexpected keyword argument(s) {sorted(kwargs)}")
    return _events.odeint_event(
        func, y0, t0, event_fn, reverse_time=reverse_time, method=method, rtol=rtol, atol=atol,
        **adjoint, **options,
    )
