"""``odeint``: the public entry point of ``la.ode`` (argument checking, tuple states, adjoint)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .adjoint import AdjointSettings, odeint_adjoint_flat
from .solvers import METHODS, ODEStats, StepOptions, integrate

__all__ = ["odeint", "step_options"]

State = Tensor | tuple[Tensor, ...]


def _check_t(t: Any, like: Tensor, event: bool = False) -> Tensor:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"t: expected a 1-D tensor of times, got {type(t).__name__}") from exc
    if event and t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t: expected a 1-D tensor with at least one time, got shape {tuple(t.shape)}")
    if t.dtype != like.dtype or t.device != like.device:
        t = t.to(device=like.device, dtype=like.dtype)  # differentiable: grads flow back to t
    if event:
        if t.numel() > 2 or not bool(torch.isfinite(t[0])) or bool(torch.isnan(t[-1])):
            raise ValueError(
                "t: with event_fn, expected (t0,) or (t0, t_max) with t0 finite (t_max may be "
                f"+-inf), got {t.tolist()}"
            )
        if t.numel() == 1:
            t = torch.cat([t, (t.detach() + math.inf)])
    elif not bool(torch.isfinite(t).all()):
        raise ValueError(f"t: times must be finite, got {t.tolist()}")
    if t.numel() > 1:
        dt = t[1:] - t[:-1]
        if not (bool((dt > 0).all()) or bool((dt < 0).all())):
            raise ValueError(
                f"t: times must be strictly increasing or strictly decreasing, got {t.tolist()}"
            )
    return t


class _Flatten:
    """Maps the user's state structure (tensor or tuple of tensors) to a flat (N,) vector."""

    def __init__(self, y0: State) -> None:
        self.is_tuple = isinstance(y0, tuple | list)
        parts = tuple(y0) if self.is_tuple else (y0,)
        if not parts:
            raise ValueError("y0: expected a tensor or a non-empty tuple of tensors, got ()")
        for i, p in enumerate(parts):
            if not isinstance(p, Tensor):
                where = f"y0[{i}]" if self.is_tuple else "y0"
                raise ValueError(f"{where}: expected a torch.Tensor, got {type(p).__name__}")
            if not torch.is_floating_point(p):
                where = f"y0[{i}]" if self.is_tuple else "y0"
                raise ValueError(f"{where}: expected a floating-point tensor, got dtype {p.dtype}")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"y0[{i}]: all state tensors must share dtype and device; got {p.dtype} on "
                    f"{p.device}, but y0[0] is {first.dtype} on {first.device}"
                )
        self.shapes = [p.shape for p in parts]
        self.sizes = [p.numel() for p in parts]
        self.dtype = first.dtype

    def flatten(self, y: State) -> Tensor:
        """The state (or f's output, cast to y0's dtype as torchdiffeq does) as one (N,) vector."""
        if not self.is_tuple:
            return y.reshape(-1).to(self.dtype)  # type: ignore[union-attr]
        return torch.cat([p.reshape(-1).to(self.dtype) for p in y])

    def unflatten(self, y: Tensor) -> State:
        """(..., N) -> the user's structure with leading dims kept (0-dim components too)."""
        lead = tuple(y.shape[:-1])
        if not self.is_tuple:
            return y.reshape(lead + tuple(self.shapes[0]))
        return tuple(
            p.reshape(lead + tuple(s)) for p, s in zip(y.split(self.sizes, dim=-1), self.shapes)
        )

    def check_output(self, out: Any, t0: float) -> None:
        """Raise ValueError unless ``f(t0, y0)`` has the structure and shapes of y0."""
        if self.is_tuple:
            if not isinstance(out, tuple | list) or len(out) != len(self.shapes):
                raise ValueError(
                    f"f: for a tuple state of {len(self.shapes)} tensors, f(t, y) must return a "
                    f"tuple of {len(self.shapes)} tensors; f(t0={t0:g}, y0) returned "
                    f"{_describe(out)}"
                )
            outs = list(out)
        else:
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"f: must return a tensor shaped like y0 {tuple(self.shapes[0])}; "
                    f"f(t0={t0:g}, y0) returned {_describe(out)}"
                )
            outs = [out]
        for i, (o, s) in enumerate(zip(outs, self.shapes)):
            if not isinstance(o, Tensor) or o.shape != s:
                where = f" component {i}" if self.is_tuple else ""
                raise ValueError(
                    f"f: output{where} must have the shape of y0{where} {tuple(s)}; "
                    f"f(t0={t0:g}, y0) returned {_describe(o)}"
                )

    def flat_func(self, f: Callable[[Tensor, State], Any]) -> Callable[[Tensor, Tensor], Tensor]:
        """``f`` on flat (N,) states; its output is cast to y0's dtype (differentiably)."""
        dtype = self.dtype
        if not self.is_tuple:
            shape = self.shapes[0]

            def func(t: Tensor, y: Tensor) -> Tensor:
                return f(t, y.view(shape)).reshape(-1).to(dtype)

            return func
        sizes, shapes = self.sizes, self.shapes

        def func_tuple(t: Tensor, y: Tensor) -> Tensor:
            parts = tuple(p.view(s) for p, s in zip(y.split(sizes), shapes))
            return torch.cat([o.reshape(-1).to(dtype) for o in f(t, parts)])

        return func_tuple


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, tuple | list):
        return f"a {type(x).__name__} of {len(x)}: ({', '.join(_describe(v) for v in x)})"
    return f"a {type(x).__name__}"


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from exc
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return v


_OPTION_NAMES = (
    "step_size", "first_step", "min_step", "max_step", "max_steps", "safety", "ifactor", "dfactor",
    "grid_constructor", "step_t", "jump_t", "perturb", "norm",
)
_CALLBACK_NAMES = ("step", "accept_step", "reject_step")


def _times_option(name: str, value: Any) -> tuple[float, ...]:
    if value is None:
        return ()
    try:
        vals = torch.as_tensor(value, dtype=torch.float64).detach().reshape(-1).cpu().tolist()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: expected a 1-D tensor or sequence of times, got {value!r}") from exc
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name}: expected finite times, got {vals}")
    return tuple(vals)


def step_options(
    method: str,
    *,
    step_size: float | None = None,
    first_step: float | None = None,
    min_step: float = 0.0,
    max_step: float = math.inf,
    max_steps: int | None = None,
    safety: float = 0.9,
    ifactor: float = 10.0,
    dfactor: float = 0.2,
    grid: list[float] | None = None,
    step_t: Any = None,
    jump_t: Any = None,
    perturb: bool = False,
    norm: Callable[[Tensor], float] | None = None,
    where: str = "",
) -> StepOptions:
    """Validate the step-size options of :func:`odeint` (one place, one message style).

    ``where`` prefixes the argument names in messages (e.g. ``"adjoint_options."``).
    """
    if step_size is not None:
        step_size = _check_positive(f"{where}step_size", step_size)
    if first_step is not None:
        first_step = _check_positive(f"{where}first_step", first_step)
    try:
        min_step, max_step = float(min_step), float(max_step)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}min_step/max_step: expected numbers, got {min_step!r}, {max_step!r}"
        ) from exc
    if not (0.0 <= min_step <= max_step) or max_step <= 0:
        raise ValueError(
            f"{where}min_step, max_step: expected 0 <= min_step <= max_step and max_step > 0, "
            f"got {min_step!r}, {max_step!r}"
        )
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(f"{where}max_steps: expected a positive integer or None, got {max_steps!r}")
    safety = _check_positive(f"{where}safety", safety)
    ifactor = _check_positive(f"{where}ifactor", ifactor)
    dfactor = _check_positive(f"{where}dfactor", dfactor)
    if not (dfactor <= 1.0 <= ifactor):
        raise ValueError(
            f"{where}dfactor, ifactor: expected dfactor <= 1 <= ifactor, got {dfactor}, {ifactor}"
        )
    tab = METHODS[method]
    if grid is not None and step_size is not None:
        raise ValueError(
            f"{where}step_size, grid_constructor: expected at most one of them, got both"
        )
    steps, jumps = _times_option(f"{where}step_t", step_t), _times_option(f"{where}jump_t", jump_t)
    if set(steps) & set(jumps):
        raise ValueError(
            f"{where}step_t, jump_t: expected no time in both, got {sorted(set(steps) & set(jumps))}"
        )
    return StepOptions(
        step_size=step_size, first_step=first_step, min_step=min_step, max_step=max_step,
        max_steps=max_steps, safety=safety, ifactor=ifactor, dfactor=dfactor,
        grid=grid if not tab.adaptive else None, step_t=steps, jump_t=jumps,
        perturb=bool(perturb), norm=norm,
    )


def _grid(
    grid_constructor: Callable[..., Any], f: Any, y0: State, t: Tensor, where: str = ""
) -> list[float]:
    """Call ``grid_constructor(f, y0, t)`` and check its (M,) grid runs from t[0] to t[-1]."""
    if not callable(grid_constructor):
        raise ValueError(
            f"{where}grid_constructor: expected a callable (f, y0, t) -> grid, got "
            f"{type(grid_constructor).__name__}"
        )
    with torch.no_grad():
        g = grid_constructor(f, y0, t.detach())
    g = torch.as_tensor(g, dtype=torch.float64).detach().reshape(-1).cpu().tolist()
    t0, t1 = float(t[0]), float(t[-1])
    d = 1.0 if t1 >= t0 else -1.0
    ok = len(g) >= 2 and g[0] == t0 and g[-1] == t1 and all(
        d * (b - a) > 0 for a, b in zip(g[:-1], g[1:])
    )
    if not ok:
        raise ValueError(
            f"{where}grid_constructor: expected a strictly monotone grid from t[0]={t0:g} to "
            f"t[-1]={t1:g}, got {g[:6]}{'...' if len(g) > 6 else ''}"
        )
    return g


def _flat_norm(norm: Any, flat: _Flatten, where: str = "") -> Callable[[Tensor], float] | None:
    if norm is None:
        return None
    if not callable(norm):
        raise ValueError(
            f"{where}norm: expected a callable on states (tensor or tuple) returning a scalar, "
            f"got {norm!r}"
        )

    def flat_norm(x: Tensor) -> float:
        return float(norm(flat.unflatten(x)))

    return flat_norm


def _flat_callbacks(
    callbacks: Any, flat: _Flatten
) -> dict[str, Callable[[Tensor, Tensor, Tensor], Any]] | None:
    """User callbacks ``fn(t0, y0 (state structure), dt)`` as callbacks on flat states."""
    if callbacks is None:
        return None
    if not isinstance(callbacks, dict) or not set(callbacks) <= set(_CALLBACK_NAMES) or not all(
        callable(c) for c in callbacks.values()
    ):
        raise ValueError(
            f"callbacks: expected a dict of callables with keys among {_CALLBACK_NAMES}, got "
            f"{callbacks!r}"
        )

    def wrap(cb: Callable[..., Any]) -> Callable[[Tensor, Tensor, Tensor], Any]:
        return lambda t0, y, dt: cb(t0, flat.unflatten(y), dt)

    return {k: wrap(c) for k, c in callbacks.items()}


Tol = float | Tensor


def _check_tol(name: str, value: Any, flat: _Flatten | None = None) -> Tol:
    """A positive tolerance: a number, or per element (a tensor shaped like the state, or a tuple
    with one number or tensor per component of a tuple state) -> a flat (N,) tensor."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, Tensor | tuple | list):
        return _check_positive(name, value)
    if flat is None:
        raise NotImplementedError(f"{name}: per-element tolerances are not offered here; pass a number")
    parts = tuple(value) if isinstance(value, tuple | list) else (value,)
    if isinstance(value, tuple | list) != flat.is_tuple or len(parts) != len(flat.shapes):
        raise ValueError(
            f"{name}: expected a number, a tensor shaped like y0, or (for a tuple state) a tuple "
            f"of {len(flat.shapes)} numbers or tensors; got {_describe(value)}"
        )
    out = []
    for p, shape in zip(parts, flat.shapes):
        p = torch.as_tensor(p, dtype=torch.float64).detach()
        if p.numel() != 1 and p.shape != shape:
            raise ValueError(
                f"{name}: a per-element tolerance must have the state's shape {tuple(shape)}, "
                f"got {tuple(p.shape)}"
            )
        out.append(p.expand(shape).reshape(-1))
    tol = torch.cat(out)
    if not bool(((tol > 0) & torch.isfinite(tol)).all()):
        raise ValueError(f"{name}: expected positive finite tolerances, got {tol.tolist()}")
    return tol


def odeint(
    f: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    method: str = "dopri5",
    rtol: float | Tensor | Sequence[float | Tensor] = 1e-6,
    atol: float | Tensor | Sequence[float | Tensor] = 1e-8,
    adjoint: bool = False,
    params: Iterable[Tensor] | None = None,
    step_size: float | None = None,
    max_steps: int | None = None,
    return_stats: bool = False,
    *,
    first_step: float | None = None,
    min_step: float = 0.0,
    max_step: float = math.inf,
    grid_constructor: Callable[[Any, State, Tensor], Tensor] | None = None,
    norm: Callable[[State], Any] | None = None,
    perturb: bool = False,
    step_t: Tensor | Sequence[float] | None = None,
    jump_t: Tensor | Sequence[float] | None = None,
    safety: float = 0.9,
    ifactor: float = 10.0,
    dfactor: float = 0.2,
    event_fn: Callable[[Tensor, State], Tensor] | None = None,
    callbacks: dict[str, Callable[[Tensor, State, Tensor], Any]] | None = None,
    adjoint_method: str | None = None,
    adjoint_rtol: float | Tensor | Sequence[float | Tensor] | None = None,
    adjoint_atol: float | Tensor | Sequence[float | Tensor] | None = None,
    adjoint_options: dict[str, Any] | None = None,
) -> Any:
    """Solve ``dy/dt = f(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every time in ``t``.

    Args:
        f: vector field ``f(t, y)``; ``t`` is a 0-dim tensor (y0's dtype), ``y`` has the
            structure of ``y0``; returns the same structure and shapes (other dtypes are cast to
            y0's, differentiably).
        y0: initial state: a tensor of any shape including 0-dim (e.g. a batch (B, D)), or a
            tuple of tensors (e.g. ``(z (B, D), logp (B,))`` for a CNF) sharing dtype and device.
        t: (T,) strictly increasing or strictly decreasing times (backwards integration works);
            ``t[0]`` is the time of ``y0``. Cast to y0's device and dtype (differentiably).
        method: adaptive ``"dopri5"`` (default), ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``, or fixed-step ``"euler"``, ``"midpoint"``, ``"heun2"``,
            ``"heun3"``, ``"rk4"`` (see :data:`~latentatlas.ode.METHODS`).
        rtol, atol: relative / absolute tolerance of the local error test, in the RMS norm over
            all entries of the state (for tuple states: the max over components of their RMS
            norms, as torchdiffeq). A batch (B, D) shares one step size. Numbers, or per element:
            a tensor shaped like y0 (a tuple of numbers / tensors for a tuple state).
        adjoint_rtol, adjoint_atol: the same for the backward solve (per-element tolerances
            apply to the state and the adjoint; the parameter part uses their minimum).
        adjoint: if True, gradients are computed with the adjoint method (memory independent of
            the number of steps; one extra backward solve) instead of backpropagating through the
            solver's operations.
        params: with ``adjoint=True``, the tensors ``f`` depends on that should receive gradients
            (default: ``f.parameters()`` if ``f`` is an ``nn.Module``, else none).
        step_size: fixed-step methods: the step (default: one step per interval of ``t``; the
            last step of each interval is clipped so every requested time is hit exactly);
            adaptive methods: the first step (as ``first_step``).
        max_steps: at most this many steps (accepted + rejected) per solve; more raises
            :class:`~latentatlas.ode.ODEMaxStepsError`. Default None: no bound.
        return_stats: also return an :class:`~latentatlas.ode.ODEStats`.
        first_step: adaptive methods: the first step (default: Hairer's automatic choice).
        min_step, max_step: adaptive methods: bounds on the step; a step of ``min_step`` is
            accepted whatever its error estimate.
        grid_constructor: fixed-step methods: ``(f, y0, t) -> (M,)`` grid from ``t[0]`` to
            ``t[-1]``; the requested times are added to it.
        norm: error norm: ``norm(x) -> scalar`` with ``x`` shaped like the state (tuple for a
            tuple state); default the (mixed) RMS norm.
        perturb: fixed-step methods: evaluate ``f`` one ulp after each step's start and one ulp
            before its end (for ``f`` with discontinuities at grid times).
        step_t: adaptive methods: times the steps must land on.
        jump_t: adaptive methods: discontinuities of ``f`` in time: steps land on them and ``f``
            is evaluated on the correct side of each.
        safety, ifactor, dfactor: step-size controller (``h *= clip(safety * err^(-1/order),
            dfactor, ifactor)``).
        event_fn: ``event_fn(t, y) -> tensor``: stop at the first time a component changes sign
            (terminal event). Then ``t`` is ``(t0,)`` or ``(t0, t_max)`` (t_max may be +-inf and
            sets the direction; no event before it raises :class:`~latentatlas.ode.ODEError`)
            and the result is ``(event_t, states)`` with ``states`` = y at ``(t0, event_t)``.
            ``event_t`` carries no gradient here: use :func:`~latentatlas.ode.odeint_event` for
            gradients through the event time.
        callbacks: ``{"step" | "accept_step" | "reject_step": fn(t0, y0, dt)}``, called before
            every step attempt and after each accepted / rejected step of the forward solve
            (``y0`` shaped like the state; fixed-grid methods call only ``"step"``).
        adjoint_method, adjoint_rtol, adjoint_atol: the backward (adjoint) solve's method and
            tolerances (default: the forward ones).
        adjoint_options: the backward solve's step options (keys as the keyword arguments above,
            plus ``norm="seminorm"``: ignore the parameter part of the adjoint state in the error
            norm); default: the forward options without ``norm`` when the method is the same.

    Returns:
        (T, *y0.shape) states at the times ``t`` (a tuple of such for a tuple ``y0``), or with
        ``event_fn`` ``(event_t 0-dim, states (2, ...))``; followed by the stats if
        ``return_stats``. ``states[0]`` is ``y0``.

    Raises:
        ValueError: bad method, tolerances, options, times or shapes.
        ODEMaxStepsError, ODEStepSizeError, ODENonFiniteError (all ``RuntimeError``): the solve
            failed; the message says at which time.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if not callable(f):
        raise ValueError(f"f: expected a callable f(t, y), got {type(f).__name__}")
    if event_fn is not None and not callable(event_fn):
        raise ValueError(f"event_fn: expected a callable (t, y) -> tensor, got {event_fn!r}")

    flat = _Flatten(y0)
    parts = tuple(y0) if flat.is_tuple else (y0,)
    like = parts[0]
    rtol = _on(_check_tol("rtol", rtol, flat), like)
    atol = _on(_check_tol("atol", atol, flat), like)
    t = _check_t(t, like, event=event_fn is not None)
    times = t.detach().cpu().tolist()
    if len(times) > 1 and times[-1] == times[0]:
        raise ValueError(f"t: times must be strictly monotone, got {times}")
    grid = _grid(grid_constructor, f, y0, t) if grid_constructor is not None else None
    opts = step_options(
        method, step_size=step_size, first_step=first_step, min_step=min_step,
        max_step=max_step, max_steps=max_steps, safety=safety, ifactor=ifactor,
        dfactor=dfactor, grid=grid, step_t=step_t, jump_t=jump_t, perturb=perturb,
        norm=_flat_norm(norm, flat),
    )
    opts.callbacks = _flat_callbacks(callbacks, flat)
    stats = ODEStats()
    func = flat.flat_func(f)
    event = None
    if event_fn is not None:
        def event(tt: Tensor, y: Tensor) -> Tensor:
            return torch.as_tensor(event_fn(tt, flat.unflatten(y)))

    if adjoint:
        if params is None:
            params = list(f.parameters()) if isinstance(f, nn.Module) else []
        else:
            params = list(params)
            for i, p in enumerate(params):
                if not isinstance(p, Tensor):
                    raise ValueError(f"params[{i}]: expected a tensor, got {type(p).__name__}")
        params = [p for p in params if p.requires_grad]
        settings = _adjoint_settings(
            method, rtol, atol, opts, adjoint_method, adjoint_rtol, adjoint_atol,
            adjoint_options, f, y0, t, flat,
        )
        y0_flat = flat.flatten(y0)
        with torch.no_grad():
            out0 = f(t[0], flat.unflatten(y0_flat.detach()))
            flat.check_output(out0, times[0])
            f0 = flat.flatten(out0)
        stats.nfe += 1
        ys, event_t = odeint_adjoint_flat(
            func, y0_flat, t, times, method, rtol=rtol, atol=atol, opts=opts, stats=stats,
            params=params, norm_sizes=flat.sizes, f0=f0, settings=settings, event=event,
        )
    else:
        y0_flat = flat.flatten(y0)
        out0 = f(t[0], flat.unflatten(y0_flat))
        flat.check_output(out0, times[0])
        stats.nfe += 1
        out, _, event_t = integrate(
            func, y0_flat, times, method, rtol=rtol, atol=atol, opts=opts, stats=stats,
            t_tensor=t, f0=flat.flatten(out0), norm_sizes=flat.sizes, event=event,
        )
        ys = torch.stack(out)
    result: Any = flat.unflatten(ys)
    if event_fn is not None:
        result = (torch.tensor(event_t, dtype=t.dtype, device=t.device), result)
        return (*result, stats) if return_stats else result
    return (result, stats) if return_stats else result


def _on(tol: Tol, like: Tensor) -> Tol:
    return tol.to(dtype=like.dtype, device=like.device) if isinstance(tol, Tensor) else tol


def _adjoint_settings(
    method: str,
    rtol: Tol,
    atol: Tol,
    opts: StepOptions,
    adjoint_method: str | None,
    adjoint_rtol: float | None,
    adjoint_atol: float | None,
    adjoint_options: dict[str, Any] | None,
    f: Any,
    y0: State,
    t: Tensor,
    flat: _Flatten,
) -> AdjointSettings:
    """The backward solve's method, tolerances and step options (defaults: the forward ones)."""
    if adjoint_method is None:
        adjoint_method = method
    elif not isinstance(adjoint_method, str) or adjoint_method not in METHODS:
        raise ValueError(
            f"adjoint_method: expected one of {sorted(METHODS)}, got {adjoint_method!r}"
        )
    like = (tuple(y0) if flat.is_tuple else (y0,))[0]
    b_rtol = rtol if adjoint_rtol is None else _on(_check_tol("adjoint_rtol", adjoint_rtol, flat),
                                                   like)
    b_atol = atol if adjoint_atol is None else _on(_check_tol("adjoint_atol", adjoint_atol, flat),
                                                   like)
    seminorm = False
    if adjoint_options is None:
        if adjoint_method == method:
            b_opts = StepOptions(**{**opts.__dict__, "norm": None})
        else:
            b_opts = step_options(adjoint_method, max_steps=opts.max_steps)
    else:
        if not isinstance(adjoint_options, dict):
            raise ValueError(f"adjoint_options: expected a dict, got {adjoint_options!r}")
        kw = dict(adjoint_options)
        unknown = sorted(set(kw) - set(_OPTION_NAMES))
        if unknown:
            raise ValueError(f"adjoint_options: unknown option(s) {unknown}; known: {_OPTION_NAMES}")
        b_norm = kw.pop("norm", None)
        if isinstance(b_norm, str):
            if b_norm != "seminorm":
                raise ValueError(
                    f"adjoint_options.norm: expected 'seminorm' or None, got {b_norm!r}"
                )
            seminorm = True
        elif b_norm is not None:
            raise NotImplementedError(
                "adjoint_options.norm: a callable norm on the adjoint state is not supported; "
                "use 'seminorm' or the default"
            )
        gc = kw.pop("grid_constructor", None)
        grid = _grid(gc, f, y0, t, "adjoint_options.") if gc is not None else None
        b_opts = step_options(adjoint_method, grid=grid, where="adjoint_options.", **kw)
    return AdjointSettings(adjoint_method, b_rtol, b_atol, b_opts, seminorm, opts.norm)
