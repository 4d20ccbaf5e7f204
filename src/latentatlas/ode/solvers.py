"""Explicit Runge–Kutta solvers over a flat state: fixed-step and adaptive, dense output, events.

Everything here works on a *flat* state: a 1-D tensor ``y`` of shape (N,) and a vector field
``func(t, y) -> (N,)`` with ``t`` a 0-dim tensor. :func:`latentatlas.ode.odeint` flattens tensor and
tuple states into this form, so the inner loop is a handful of fused tensor ops per stage
(``torch.addmv`` with precomputed tableau rows) and python floats for the step-size control. The
methods are the tableaux of :mod:`latentatlas.ode.tableaux` (one entry each).

Adaptive methods, as in Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4–II.6:

- error estimate ``err = h * sum_i (b_i - b*_i) k_i``, accepted when the RMS norm of
  ``err / (atol + rtol * max(|y_n|, |y_{n+1}|))`` is <= 1 (a *mixed* norm — the max over state
  components of their RMS norms — when the state is a tuple, like torchdiffeq; or a custom norm);
- standard step-size controller ``h_new = h * clip(safety * err^(-1/order), dfactor, ifactor)``
  (defaults 0.9, 0.2, 10), no growth right after a rejection;
- initial step by Hairer's ``hinit`` (one extra evaluation); FSAL (first same as last);
- outputs at the requested times inside a step come from the step's interpolant (dense output),
  so requested times do not shorten the steps; the last step is clipped to land exactly on
  ``t[-1]``, so ``func`` is never evaluated outside ``[t[0], t[-1]]``;
- steps land on ``step_t`` / ``jump_t`` (discontinuities: evaluated one ulp before / after).

Fixed-step methods step over the grid ``t`` (default), a grid of ``step_size`` or a user grid,
always hitting every requested time exactly.

Events: with an event function the solve stops at its first sign change, located by bisection on
the dense output (fixed-step methods: a cubic Hermite interpolant) to the time dtype's precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .options import (
    Norm,
    ODEError,
    ODEMaxStepsError,
    ODENonFiniteError,
    ODEStats,
    ODEStepSizeError,
    StepOptions,
)
from .tableaux import METHODS, Tableau

__all__ = [
    "METHODS",
    "ODEError",
    "ODEMaxStepsError",
    "ODENonFiniteError",
    "ODEStats",
    "ODEStepSizeError",
    "Norm",
    "StepOptions",
    "Tableau",
    "integrate",
]

FlatFunc = Callable[[Tensor, Tensor], Tensor]
EventFunc = Callable[[Tensor, Tensor], Tensor]


class _Coefficients:
    """Tableau rows as tensors on the solve's device and dtype."""

    def __init__(self, tab: Tableau, like: Tensor) -> None:
        kw = {"dtype": like.dtype, "device": like.device}
        self.a = [torch.tensor(row, **kw) if row else None for row in tab.a]
        self.b = torch.tensor(tab.b, **kw)
        self.e = torch.tensor(tab.e, **kw) if tab.e is not None else None
        self.d = torch.tensor(tab.dense, **kw) if tab.dense is not None else None
        self.mid = torch.tensor(tab.mid, **kw) if tab.mid is not None else None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _nudge(tt: Tensor, toward: float) -> Tensor:
    """The next representable time after ``tt`` in direction ``toward`` (+1 / -1), differentiable
    like ``tt`` (as torchdiffeq's ``perturb``)."""
    base = tt.detach()
    moved = torch.nextafter(base, base + toward)
    return tt + (moved - base) if tt.requires_grad else moved


Dense = tuple  # (kind, *coefficient tensors) of one step's interpolant


def _interp(rc: Dense, theta: float | Tensor) -> Tensor:
    """Evaluate a step's interpolant at ``theta = (t - t_n) / h`` in [0, 1]."""
    kind = rc[0]
    if kind == "dopri5":
        _, y, ydiff, bspl, r4, r5 = rc
        th1 = 1 - theta
        return y + theta * (ydiff + th1 * (bspl + theta * (r4 + th1 * r5)))
    if kind == "quartic":
        _, y, d, c, b, a = rc
        return y + theta * (d + theta * (c + theta * (b + theta * a)))
    _, y, y1, f0h, f1h = rc  # cubic Hermite
    th1 = 1 - theta
    return (
        (1 + 2 * theta) * th1 * th1 * y + theta * th1 * th1 * f0h
        + theta * theta * (3 - 2 * theta) * y1 + theta * theta * (theta - 1) * f1h
    )


class _Solver:
    """One solve of ``y' = func(t, y)`` for a flat state; see :func:`integrate`."""

    def __init__(
        self,
        func: FlatFunc,
        tab: Tableau,
        y0: Tensor,
        times: Sequence[float],
        t_tensor: Tensor | None,
        t_dtype: torch.dtype,
        rtol: float | Tensor,
        atol: float | Tensor,
        opts: StepOptions,
        stats: ODEStats,
        norm_sizes: Sequence[int] | None,
        grad: bool,
        event: EventFunc | None,
    ) -> None:
        self.func = func
        self.tab = tab
        self.coef = _Coefficients(tab, y0)
        self.times = [float(x) for x in times]
        self.t_tensor = t_tensor
        self.t_kw = {"dtype": t_dtype, "device": y0.device}
        self.rtol = rtol
        self.atol = atol
        self.opts = opts
        self.stats = stats
        if opts.norm is not None:
            self.norm: Callable[[Tensor], float] = opts.norm
        else:
            self.norm = Norm(norm_sizes if norm_sizes is not None else [y0.numel()], y0)
        self.grad = grad
        self.event = event
        self.event_sign: Tensor | None = None
        self.event_t: float | None = None
        self.steps = 0
        self.nonfinite_rejections = 0
        self.direction = 1.0 if len(self.times) < 2 or self.times[-1] > self.times[0] else -1.0
        self.last_h: float | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _time(self, t: float) -> Tensor:
        return torch.tensor(t, **self.t_kw)

    def _eval(self, t: float, tt: Tensor | None, y: Tensor, shift: float = 0.0) -> Tensor:
        self.stats.nfe += 1
        if tt is None:
            tt = self._time(t)
        if shift:
            tt = _nudge(tt, shift)
        return self.func(tt, y)

    def _callback(self, name: str, t: float, tt: Tensor | None, y: Tensor, h: float) -> None:
        cbs = self.opts.callbacks
        if cbs and name in cbs:
            with torch.no_grad():
                cbs[name](tt.detach() if tt is not None else self._time(t), y.detach(),
                          self._time(h))

    def _count_step(self, t: float, h: float) -> None:
        self.steps += 1
        limit = self.opts.max_steps
        if limit is not None and self.steps > limit:
            if self.nonfinite_rejections:
                raise self._nonfinite_near(t, h)
            raise ODEMaxStepsError(
                f"odeint: max_steps={limit} reached at t={_fmt(t)} while integrating over "
                f"[{_fmt(self.times[0])}, {_fmt(self.times[-1])}] with method "
                f"'{self.tab.name}' (step size at that point: {abs(h):.3g}); the ODE may be stiff "
                "or blow up, or the tolerances are too tight — raise max_steps, loosen rtol/atol "
                "or use a larger step_size"
            )

    def _nonfinite_near(self, t: float, h: float) -> ODENonFiniteError:
        return ODENonFiniteError(
            f"odeint: the state or vector field became non-finite (NaN or inf) on the trial steps "
            f"from t={_fmt(t)}; the step size was reduced to {abs(h):.3g} without getting past "
            f"t={_fmt(t)} while integrating over [{_fmt(self.times[0])}, "
            f"{_fmt(self.times[-1])}] ({self.nonfinite_rejections} non-finite trial steps)"
        )

    def _nonfinite(self, t: float, what: str) -> ODENonFiniteError:
        return ODENonFiniteError(
            f"odeint: the {what} became non-finite (NaN or inf) at t={_fmt(t)} while integrating "
            f"over [{_fmt(self.times[0])}, {_fmt(self.times[-1])}] with method '{self.tab.name}'"
        )

    # -- one Runge–Kutta step --------------------------------------------------------------------
    def _stages(
        self, t: float, tt: Tensor | None, y: Tensor, h: float, hh: float | Tensor, k1: Tensor,
        prev: bool = False,
    ) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        """Stages of one step. Returns (y1, K (S, N) detached-or-not, ks list in grad mode).

        ``prev``: evaluate stages at ``c = 1`` just before the step's end time (a discontinuity).
        """
        tab, coef = self.tab, self.coef
        S = tab.stages
        back = -self.direction if prev else 0.0
        if not self.grad:
            K = y.new_empty((S, y.shape[0]))
            K[0] = k1
            yi = y
            for i in range(1, S):
                yi = torch.addmv(y, K[:i].t(), coef.a[i], alpha=h)
                K[i] = self._eval(t + tab.c[i] * h, None, yi, back if tab.c[i] == 1.0 else 0.0)
            if tab.last_stage_is_solution:
                y1 = yi
            else:
                y1 = torch.addmv(y, K.t(), coef.b, alpha=h)
            return y1, K, None
        ks = [k1]
        yi = y
        for i in range(1, S):
            yi = y + hh * (torch.stack(ks, 1) @ coef.a[i])
            ti = tt + tab.c[i] * hh
            ks.append(self._eval(t + tab.c[i] * h, ti, yi, back if tab.c[i] == 1.0 else 0.0))
        y1 = yi if tab.last_stage_is_solution else y + hh * (torch.stack(ks, 1) @ coef.b)
        return y1, torch.stack(ks).detach(), ks

    def _error_ratio(self, y: Tensor, y1: Tensor, K: Tensor, h: float) -> float:
        y, y1 = y.detach(), y1.detach()
        scale = torch.maximum(y.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        r = torch.mv(K.t(), self.coef.e).div_(scale)
        return abs(h) * self.norm(r)

    def _dense(
        self, y: Tensor, y1: Tensor, K: Tensor, ks: list[Tensor] | None, hh: float | Tensor
    ) -> Dense:
        """Coefficients of the step's interpolant (Dormand–Prince's for dopri5, else quartic)."""
        coef = self.coef
        if ks is not None:
            Ks = torch.stack(ks, 1)
            k1, kS = ks[0], ks[-1]

            def comb(w: Tensor) -> Tensor:
                return Ks @ w
        else:
            k1, kS = K[0], K[-1]

            def comb(w: Tensor) -> Tensor:
                return torch.mv(K.t(), w)

        if coef.d is not None:
            ydiff = y1 - y
            bspl = hh * k1 - ydiff
            return ("dopri5", y, ydiff, bspl, ydiff - hh * kS - bspl, hh * comb(coef.d))
        f0h, f1h = hh * k1, hh * kS
        if coef.mid is None:
            return ("hermite", y, y1, f0h, f1h)
        ymid = y + hh * comb(coef.mid)
        a = 2 * (f1h - f0h) - 8 * (y1 + y) + 16 * ymid
        b = 5 * f0h - 3 * f1h + 18 * y + 14 * y1 - 32 * ymid
        c = f1h - 4 * f0h - 11 * y - 5 * y1 + 16 * ymid
        return ("quartic", y, f0h, c, b, a)

    # -- initial step (Hairer's hinit) --------------------------------------------------------------
    def _initial_step(self, t: float, y: Tensor, f0: Tensor, span: float) -> float:
        y, f0 = y.detach(), f0.detach()
        scale = y.abs().mul_(self.rtol).add_(self.atol)
        d0 = self.norm(y / scale)
        d1 = self.norm(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        with torch.no_grad():
            f1 = self._eval(t + self.direction * h0, None, y + (self.direction * h0) * f0)
        d2 = self.norm((f1.detach() - f0).div_(scale)) / h0
        if not math.isfinite(d2):
            return h0 * 1e-3
        d12 = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if d12 <= 1e-15 else (0.01 / d12) ** (1.0 / self.tab.order)
        return min(100 * h0, h1, span)

    # -- events ---------------------------------------------------------------------------------
    def _event_value(self, t: float, y: Tensor) -> float:
        """min over components of event_fn(t, y) * (its sign at t0): > 0 until the event."""
        assert self.event is not None
        with torch.no_grad():
            g = self.event(self._time(t), y.detach()).detach().reshape(-1)
            if self.event_sign is None:
                self.event_sign = torch.sign(g)
            return float((g * self.event_sign).min()) if g.numel() else math.inf

    def _locate_event(self, t: float, h: float, rc: Dense) -> float:
        """Bisection on the step's interpolant for the first time where the event value <= 0."""
        rc_d = tuple(x.detach() if isinstance(x, Tensor) else x for x in rc)
        lo, hi = t, t + h
        eps = torch.finfo(self.t_kw["dtype"]).eps
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if abs(hi - lo) <= 2 * eps * max(abs(lo), abs(hi), 1e-300) or mid in (lo, hi):
                break
            if self._event_value(mid, _interp(rc_d, (mid - t) / h)) > 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def _event_output(
        self, t: float, tt: Tensor | None, h: float, hh: float | Tensor, rc: Dense
    ) -> Tensor:
        """State at the located event time (differentiable w.r.t. everything but the time)."""
        t_star = self._locate_event(t, h, rc)
        self.event_t = t_star
        if self.grad and tt is not None:  # t* is a constant; y(t*) depends on t0 through tt
            return _interp(rc, (self._time(t_star) - tt) / hh)
        return _interp(rc, (t_star - t) / h)

    # -- drivers ----------------------------------------------------------------------------------
    def run(self, y0: Tensor, f0: Tensor | None = None, h0: float | None = None) -> list[Tensor]:
        """Integrate; returns the states at every time in ``times`` (list of (N,) tensors), or
        ``[y0, y(t_event)]`` with an event function (``self.event_t`` holds the event time)."""
        if len(self.times) < 2:
            return [y0]
        if self.event is not None and self._event_value(self.times[0], y0) <= 0:
            self.event_t = self.times[0]
            return [y0, y0]
        if self.tab.adaptive:
            return self._run_adaptive(y0, f0, h0)
        return self._run_fixed(y0, f0)

    def _tt(self, i: int) -> Tensor | None:
        return self.t_tensor[i] if self.grad and self.t_tensor is not None else None

    def _fixed_grid(self) -> list[float]:
        times, d, opts = self.times, self.direction, self.opts
        if self.event is not None:
            if opts.step_size is None:
                raise ValueError(
                    f"step_size: event handling with the fixed-step method '{self.tab.name}' "
                    "needs a step_size, got None"
                )
            return []  # steps generated on the fly
        if opts.grid is not None:
            pts = sorted(set(opts.grid) | set(times), key=lambda x: d * x)
            return [p for p in pts if d * (p - times[0]) >= 0 and d * (times[-1] - p) >= 0]
        if opts.step_size is None:
            return list(times)
        pts = [times[0]]
        for j in range(1, len(times)):
            span = abs(times[j] - times[j - 1])
            n = max(1, math.ceil(span / opts.step_size - 1e-9))
            pts.extend(times[j - 1] + d * s * opts.step_size for s in range(1, n))
            pts.append(times[j])
        return pts

    def _run_fixed(self, y0: Tensor, f0: Tensor | None) -> list[Tensor]:
        pts = self._fixed_grid()
        times, d = self.times, self.direction
        T = len(times)
        perturb = self.opts.perturb
        out = [y0]
        y, t, tt = y0, times[0], self._tt(0)
        if self.grad and tt is None:
            tt = self._time(t)
        k1 = None if perturb else f0
        j, i = 1, 1
        while True:
            if self.event is None:
                if i >= len(pts):
                    break
                p = pts[i]
                i += 1
            else:
                p = t + d * float(self.opts.step_size)  # type: ignore[arg-type]
            hits = self.event is None and j < T and p == times[j]
            h = p - t
            if self.grad:
                if hits:
                    target = self.t_tensor[j] if self.t_tensor is not None else self._time(p)
                    hh: float | Tensor = target - tt
                else:
                    hh = h
            else:
                hh = h
            self._count_step(t, h)
            self._callback("step", t, tt, y, h)
            if k1 is None:
                k1 = self._eval(t, tt, y, d if perturb else 0.0)
            y1, _, ks = self._stages(t, tt, y, h, hh, k1, prev=perturb)
            tt1 = tt + hh if self.grad else None
            self.stats.accepted += 1
            # NaN / inf propagate into the sum (one scalar check per step); confirm elementwise
            if not math.isfinite(float(y1.detach().sum())) and not bool(torch.isfinite(y1).all()):
                raise self._nonfinite(p, "state")
            if self.event is not None and self._event_value(p, y1) <= 0:
                f1 = self._eval(p, tt1, y1)
                rc = ("hermite", y, y1, hh * k1, hh * f1)
                return [y0, self._event_output(t, tt, h, hh, rc)]
            y, t, tt, k1 = y1, p, tt1, None
            if hits:
                out.append(y)
                j += 1
        return out

    def _stops(self) -> list[tuple[float, bool]]:
        """step_t / jump_t strictly inside the integration interval, in the direction of time."""
        t0, t_end, d = self.times[0], self.times[-1], self.direction
        stops = [(float(p), False) for p in self.opts.step_t]
        stops += [(float(p), True) for p in self.opts.jump_t]
        stops = [s for s in stops if d * (s[0] - t0) > 0 and d * (t_end - s[0]) > 0]
        return sorted(stops, key=lambda s: d * s[0])

    def _run_adaptive(self, y0: Tensor, f0: Tensor | None, h0: float | None) -> list[Tensor]:
        times, d, opts = self.times, self.direction, self.opts
        T = len(times)
        t_end = times[-1]
        inv_order = 1.0 / self.tab.order
        out = [y0]
        y, t, tt = y0, times[0], self._tt(0)
        if self.grad and tt is None:
            tt = self._time(t)
        k1 = self._eval(t, tt, y) if f0 is None else f0
        if not bool(torch.isfinite(k1).all()):
            raise self._nonfinite(t, "vector field f(t, y0)")
        span = abs(t_end - t)
        first = opts.first_step if opts.first_step is not None else opts.step_size
        if first is not None:
            h_abs = min(float(first), span)
        elif h0 is not None:
            h_abs = min(abs(h0), span)
        else:
            h_abs = self._initial_step(t, y, k1, span)
        stops = self._stops()
        s_i = 0
        rejected_last = False
        j = 1
        while j < T:
            h_abs = min(max(h_abs, opts.min_step), opts.max_step)
            last = (t + d * 1.01 * h_abs - t_end) * d >= 0
            h = t_end - t if last else d * h_abs
            on_jump = False
            on_stop = False
            while s_i < len(stops) and d * (stops[s_i][0] - t) <= 0:
                s_i += 1
            if s_i < len(stops) and d * (t + h - stops[s_i][0]) >= 0:
                h = stops[s_i][0] - t
                last, on_stop, on_jump = False, True, stops[s_i][1]
            h_abs = abs(h)
            if self.grad:
                hh = ((self.t_tensor[-1] if self.t_tensor is not None else self._time(t_end)) - tt
                      if last else h)
            else:
                hh = h
            self._count_step(t, h)
            if h_abs <= 16 * math.ulp(max(abs(t), 1e-300)):
                if self.nonfinite_rejections:
                    raise self._nonfinite_near(t, h)
                raise ODEStepSizeError(
                    f"odeint: step size underflow (h={h_abs:.3g}) at t={_fmt(t)} while "
                    f"integrating over [{_fmt(times[0])}, {_fmt(t_end)}]; the solution probably "
                    "blows up or the ODE is stiff"
                )
            self._callback("step", t, tt, y, h)
            y1, K, ks = self._stages(t, tt, y, h, hh, k1, prev=on_jump)
            ratio = self._error_ratio(y, y1, K, h)
            if not math.isfinite(ratio):
                # A too large step can overflow: shrink it and retry (if the field is NaN beyond
                # some time, the step shrinks until max_steps / underflow -> ODENonFiniteError).
                self.stats.rejected += 1
                self.nonfinite_rejections += 1
                self._callback("reject_step", t, tt, y, h)
                rejected_last = True
                h_abs *= opts.dfactor
                if h_abs <= opts.min_step:
                    raise self._nonfinite_near(t, h)
                continue
            fac11 = ratio**inv_order
            if ratio <= 1.0 or h_abs <= opts.min_step:
                self.stats.accepted += 1
                self._callback("accept_step", t, tt, y, h)
                t_new = t_end if last else t + h
                tt_new = tt + hh if self.grad else None
                rc = None
                if self.event is not None and self._event_value(t_new, y1) <= 0:
                    rc = self._dense(y, y1, K, ks, hh)
                    return [y0, self._event_output(t, tt, h, hh, rc)]
                while j < T and (times[j] - t_new) * d <= 0:
                    if times[j] == t_new:
                        out.append(y1)
                    else:
                        if rc is None:
                            rc = self._dense(y, y1, K, ks, hh)
                        if self.grad:
                            tj = self.t_tensor[j] if self.t_tensor is not None \
                                else self._time(times[j])
                            theta = (tj - tt) / hh
                        else:
                            theta = (times[j] - t) / h
                        out.append(_interp(rc, theta))
                    j += 1
                y, t, tt = y1, t_new, tt_new
                k1 = ks[-1] if ks is not None else K[-1]
                if on_stop:
                    s_i += 1
                if on_jump:  # f is discontinuous here: restart from its value just after t
                    k1 = self._eval(t, tt, y, d)
                fac = opts.ifactor if fac11 == 0 else \
                    min(opts.ifactor, max(opts.dfactor, opts.safety / fac11))
                if rejected_last:
                    fac = min(fac, 1.0)
                rejected_last = False
                h_abs = h_abs * fac
                if not (last or on_stop) or self.last_h is None:
                    self.last_h = d * h_abs  # proposed next step (a clipped last step is short)
            else:
                self.stats.rejected += 1
                self._callback("reject_step", t, tt, y, h)
                rejected_last = True
                h_abs = h_abs * max(opts.dfactor, opts.safety / fac11)
        return out


def integrate(
    func: FlatFunc,
    y0: Tensor,
    times: Sequence[float],
    method: str,
    *,
    rtol: float | Tensor,
    atol: float | Tensor,
    opts: StepOptions,
    stats: ODEStats,
    t_tensor: Tensor | None = None,
    t_dtype: torch.dtype | None = None,
    f0: Tensor | None = None,
    h0: float | None = None,
    norm_sizes: Sequence[int] | None = None,
    event: EventFunc | None = None,
) -> tuple[list[Tensor], float | None, float | None]:
    """Solve ``y' = func(t, y)`` for a flat state (no argument checking: see ``odeint``).

    Args:
        func: vector field ``(t 0-dim, y (N,)) -> (N,)``.
        y0: (N,) initial state.
        times: the T output times (python floats, strictly monotone). With ``event``: two times,
            ``t0`` and a bound in the direction of integration (may be +-inf).
        method: a key of :data:`METHODS`.
        rtol, atol: tolerances (adaptive methods): numbers or per-element (N,) tensors.
        opts: step-size options.
        stats: counters updated in place.
        t_tensor: (T,) times as a tensor; when autograd is on, outputs are differentiable w.r.t. it.
        t_dtype: dtype of the time tensors passed to ``func`` (default: y0's).
        f0: ``func(times[0], y0)`` if already computed (saves an evaluation).
        h0: initial step guess for adaptive methods (skips the initial-step selection).
        norm_sizes: segment sizes for the mixed error norm (default: one segment).
        event: ``event(t 0-dim, y (N,)) -> tensor``; the solve stops at the first time where a
            component changes sign (located by bisection on the dense output).

    Returns:
        (list of T states (N,) — with ``event``: ``[y0, y(t_event)]`` —, the step proposed after
        the last unclipped step of an adaptive solve (signed) or None, the event time or None).
    """
    solver = _Solver(
        func,
        METHODS[method],
        y0,
        times,
        t_tensor,
        t_dtype or (t_tensor.dtype if t_tensor is not None else y0.dtype),
        rtol,
        atol,
        opts,
        stats,
        norm_sizes,
        grad=torch.is_grad_enabled(),
        event=event,
    )
    out = solver.run(y0, f0, h0)
    if event is not None and solver.event_t is None:
        raise ODEError(
            f"odeint: no event before t={_fmt(solver.times[-1])} (integrated from "
            f"t={_fmt(solver.times[0])} with method '{solver.tab.name}')"
        )
    return out, solver.last_h, solver.event_t
