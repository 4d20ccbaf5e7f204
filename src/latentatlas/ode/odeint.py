"""``odeint``: the public entry point of ``la.ode`` (argument checking, tuple states, adjoint)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .adjoint import odeint_adjoint_flat
from .solvers import METHODS, ODEStats, integrate

__all__ = ["odeint"]

State = Tensor | tuple[Tensor, ...]


def _check_t(t: Any, like: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"t: expected a 1-D tensor of times, got {type(t).__name__}") from exc
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t: expected a 1-D tensor with at least one time, got shape {tuple(t.shape)}")
    if t.dtype != like.dtype or t.device != like.device:
        t = t.to(device=like.device, dtype=like.dtype)  # differentiable: grads flow back to t
    if not bool(torch.isfinite(t).all()):
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

    def flatten(self, y: State) -> Tensor:
        if not self.is_tuple:
            return y.reshape(-1)  # type: ignore[union-attr]
        return torch.cat([p.reshape(-1) for p in y])

    def unflatten(self, y: Tensor) -> State:
        """(..., N) -> the user's structure with leading dims kept."""
        lead = y.shape[:-1]
        if not self.is_tuple:
            return y.reshape(*lead, *self.shapes[0])
        return tuple(
            p.reshape(*lead, *s) for p, s in zip(y.split(self.sizes, dim=-1), self.shapes)
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

    def flat_func(self, f: Callable[[Tensor, State], State]) -> Callable[[Tensor, Tensor], Tensor]:
        if not self.is_tuple:
            shape = self.shapes[0]

            def func(t: Tensor, y: Tensor) -> Tensor:
                return f(t, y.view(shape)).reshape(-1)

            return func
        sizes, shapes = self.sizes, self.shapes

        def func_tuple(t: Tensor, y: Tensor) -> Tensor:
            parts = tuple(p.view(s) for p, s in zip(y.split(sizes), shapes))
            return torch.cat([o.reshape(-1) for o in f(t, parts)])

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


def odeint(
    f: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor | Sequence[float],
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    adjoint: bool = False,
    params: Iterable[Tensor] | None = None,
    step_size: float | None = None,
    max_steps: int = 10_000,
    return_stats: bool = False,
) -> State | tuple[State, ODEStats]:
    """Solve ``dy/dt = f(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every time in ``t``.

    Args:
        f: vector field ``f(t, y)``; ``t`` is a 0-dim tensor (y0's dtype), ``y`` has the
            structure of ``y0``; returns the same structure and shapes.
        y0: initial state: a tensor of any shape (e.g. a batch (B, D)), or a tuple of tensors
            (e.g. ``(z (B, D), logp (B,))`` for a CNF) sharing dtype and device.
        t: (T,) strictly increasing or strictly decreasing times (backwards integration works);
            ``t[0]`` is the time of ``y0``. Cast to y0's device and dtype (differentiably).
        method: ``"dopri5"`` (adaptive Dormand–Prince 5(4), the default), or fixed-step
            ``"euler"``, ``"midpoint"``, ``"rk4"``.
        rtol, atol: relative / absolute tolerance of dopri5's local error test, in the RMS norm
            over all entries of the state (for tuple states: the max over components of their RMS
            norms, as torchdiffeq). A batch (B, D) shares one step size, so the tolerance applies
            to the RMS over the batch.
        adjoint: if True, gradients are computed with the adjoint method (memory independent of
            the number of steps; one extra backward solve) instead of backpropagating through the
            solver's operations.
        params: with ``adjoint=True``, the tensors ``f`` depends on that should receive gradients
            (default: ``f.parameters()`` if ``f`` is an ``nn.Module``, else none). Tensors that do
            not require grad are skipped. Ignored without adjoint (autograd sees everything).
        step_size: the step of fixed-step methods (required for them); for dopri5 the initial
            step (default: Hairer's automatic choice).
        max_steps: at most this many steps (accepted + rejected) per solve; more raises
            :class:`~latentatlas.ode.ODEMaxStepsError`.
        return_stats: also return an :class:`~latentatlas.ode.ODEStats` (function evaluations,
            accepted and rejected steps; with adjoint, the backward counts are filled in once
            backward has run).

    Returns:
        (T, *y0.shape) states at the times ``t`` (a tuple of such for a tuple ``y0``), or
        ``(states, stats)`` if ``return_stats``. ``states[0]`` is ``y0``.

    Raises:
        ValueError: bad method, tolerances, step_size, max_steps, times or shapes.
        ODEMaxStepsError, ODEStepSizeError, ODENonFiniteError (all ``RuntimeError``): the solve
            failed; the message says at which time.

    Notes:
        dopri5 outputs at interior requested times come from the 4th-order Dormand–Prince dense
        output (requested times do not shorten steps); the last step is clipped so that the final
        time is hit exactly and ``f`` is never evaluated outside ``[t[0], t[-1]]``. Fixed-step
        methods clip the last step of every interval so that each requested time is hit exactly.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    tab = METHODS[method]
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol)
    if step_size is not None:
        step_size = _check_positive("step_size", step_size)
    elif not tab.adaptive:
        raise ValueError(
            f"step_size: the fixed-step method {method!r} needs a step_size (e.g. step_size=0.01), "
            "got None; or use method='dopri5' for adaptive steps"
        )
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: expected a positive integer, got {max_steps!r}")
    if not callable(f):
        raise ValueError(f"f: expected a callable f(t, y), got {type(f).__name__}")

    flat = _Flatten(y0)
    parts = tuple(y0) if flat.is_tuple else (y0,)
    like = parts[0]
    t = _check_t(t, like)
    times = t.detach().cpu().tolist()
    if len(times) > 1 and times[-1] == times[0]:
        raise ValueError(f"t: times must be strictly monotone, got {times}")
    stats = ODEStats()
    func = flat.flat_func(f)

    if adjoint:
        if params is None:
            params = list(f.parameters()) if isinstance(f, nn.Module) else []
        else:
            params = list(params)
            for i, p in enumerate(params):
                if not isinstance(p, Tensor):
                    raise ValueError(f"params[{i}]: expected a tensor, got {type(p).__name__}")
        params = [p for p in params if p.requires_grad]
        y0_flat = flat.flatten(y0)
        with torch.no_grad():
            out0 = f(t[0], flat.unflatten(y0_flat.detach()))
            flat.check_output(out0, times[0])
            f0 = flat.flatten(out0)
        stats.nfe += 1
        ys = odeint_adjoint_flat(
            func, y0_flat, t, times, method, rtol=rtol, atol=atol, step_size=step_size,
            max_steps=max_steps, stats=stats, params=params, norm_sizes=flat.sizes, f0=f0,
        )
    else:
        y0_flat = flat.flatten(y0)
        out0 = f(t[0], flat.unflatten(y0_flat))
        flat.check_output(out0, times[0])
        stats.nfe += 1
        out, _ = integrate(
            func, y0_flat, times, method, rtol=rtol, atol=atol, step_size=step_size,
            max_steps=max_steps, stats=stats, t_tensor=t, f0=flat.flatten(out0),
            norm_sizes=flat.sizes,
        )
        ys = torch.stack(out)
    result = flat.unflatten(ys)
    return (result, stats) if return_stats else result
