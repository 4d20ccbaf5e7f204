"""Explicit Runge–Kutta solvers: fixed-step (euler, midpoint, rk4) and adaptive Dormand–Prince 5(4).

Everything here works on a *flat* state: a 1-D tensor ``y`` of shape (N,) and a vector field
``func(t, y) -> (N,)`` with ``t`` a 0-dim tensor. :func:`latentatlas.ode.odeint` flattens tensor and
tuple states into this form, so the inner loop is a handful of fused tensor ops per stage
(``torch.addmv`` with precomputed tableau rows) and python floats for the step-size control.

Adaptive solver (``dopri5``), as in Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4–II.6:

- error estimate ``err = h * sum_i (b_i - b*_i) k_i`` (``b*``: Shampine's embedded 4th-order
  weights, as torchdiffeq), accepted when the RMS norm of
  ``err / (atol + rtol * max(|y_n|, |y_{n+1}|))`` is <= 1 (a *mixed* norm — the max over state
  components of their RMS norms — when the state is a tuple, like torchdiffeq);
- standard step-size controller ``h_new = h * clip(0.9 * err^(-1/5), 1/5, 10)``, no growth right
  after a rejection (Hairer's PI variant: set ``_BETA = 0.04``);
- initial step by Hairer's ``hinit`` (one extra evaluation); FSAL (first same as last);
- outputs at the requested times inside a step come from the 4th-order continuous extension of
  Dormand–Prince (dense output), so requested times do not shorten the steps; the last step is
  clipped to land exactly on ``t[-1]``, so ``func`` is never evaluated outside ``[t[0], t[-1]]``.

Fixed-step solvers take steps of ``step_size`` and clip the last step of each interval so that every
requested time is hit exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "METHODS",
    "ODEError",
    "ODEMaxStepsError",
    "ODENonFiniteError",
    "ODEStats",
    "ODEStepSizeError",
    "integrate",
]

FlatFunc = Callable[[Tensor, Tensor], Tensor]


class ODEError(RuntimeError):
    """Base class of the run-time failures of an ODE solve."""


class ODEMaxStepsError(ODEError):
    """The solver needed more than ``max_steps`` steps (accepted + rejected)."""


class ODENonFiniteError(ODEError):
    """The state or the vector field became NaN or infinite."""


class ODEStepSizeError(ODEError):
    """The adaptive step size underflowed (the solution probably blows up, or the ODE is stiff)."""


@dataclass
class ODEStats:
    """Work done by a solve.

    Attributes:
        nfe: number of evaluations of the vector field in the forward solve.
        accepted: accepted steps (fixed-step methods: all steps).
        rejected: rejected steps (always 0 for fixed-step methods).
        nfe_backward: with ``adjoint=True``, evaluations of the augmented (adjoint) dynamics plus
            the evaluations of ``f`` needed for time gradients, filled in by the backward pass
            (``None`` until then). Accumulates if backward runs more than once.
        accepted_backward: accepted steps of the adjoint solve(s).
        rejected_backward: rejected steps of the adjoint solve(s).
    """

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    nfe_backward: int | None = None
    accepted_backward: int | None = None
    rejected_backward: int | None = None


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau of an explicit Runge–Kutta method (python floats; tensors built per solve)."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row i has i entries (a_i0 .. a_i,i-1); row 0 is empty
    b: tuple[float, ...]
    e: tuple[float, ...] | None = None  # b - b_hat (error weights); None for fixed-step methods
    dense: tuple[float, ...] | None = None  # d_i of the Dormand–Prince continuous extension
    fsal: bool = False  # last stage is evaluated at (t + h, y_{n+1}) and reused as k1

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.e is not None


_EULER = Tableau("euler", 1, (0.0,), ((),), (1.0,))
_MIDPOINT = Tableau("midpoint", 2, (0.0, 0.5), ((), (0.5,)), (0.0, 1.0))
_RK4 = Tableau(
    "rk4",
    4,
    (0.0, 0.5, 0.5, 1.0),
    ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    (1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
# Embedded 4th-order weights for the error estimate: Shampine's (1986) choice, as in torchdiffeq
# (Hairer's DOPRI5 uses 5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40; both
# satisfy the 4th-order conditions, Shampine's has the smaller 5th-order residual). With these,
# rtol/atol mean the same local error test as in torchdiffeq.
_DOPRI5_BHAT = (
    1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60,
)
_DOPRI5 = Tableau(
    "dopri5",
    5,
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    (
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    _DOPRI5_B,
    tuple(b - bh for b, bh in zip(_DOPRI5_B, _DOPRI5_BHAT)),
    # Hairer's DOPRI5 dense output (contd5): coefficients d_i of the 4th-order interpolant.
    (
        -12715105075 / 11282082432,
        0.0,
        87487479700 / 32700410799,
        -10690763975 / 1880347072,
        701980252875 / 199316789632,
        -1453857185 / 822651844,
        69997945 / 29380423,
    ),
    fsal=True,
)

METHODS: dict[str, Tableau] = {tab.name: tab for tab in (_EULER, _MIDPOINT, _RK4, _DOPRI5)}

# Step-size controller (Hairer's DOPRI5 defaults).
_SAFETY = 0.9
_BETA = 0.0  # PI stabilisation (Hairer uses 0.04; 0 = the standard controller)
_FAC_MIN = 0.2  # smallest step ratio h_new / h
_FAC_MAX = 10.0  # largest step ratio h_new / h


class _Coefficients:
    """Tableau rows as tensors on the solve's device and dtype."""

    def __init__(self, tab: Tableau, like: Tensor) -> None:
        kw = {"dtype": like.dtype, "device": like.device}
        self.a = [torch.tensor(row, **kw) if row else None for row in tab.a]
        self.b = torch.tensor(tab.b, **kw)
        self.e = torch.tensor(tab.e, **kw) if tab.e is not None else None
        self.d = torch.tensor(tab.dense, **kw) if tab.dense is not None else None


class _Norm:
    """RMS norm of a flat vector, or the max over segments of their RMS norms (mixed norm).

    Args:
        sizes: lengths of the segments (components of a tuple state), summing to N.
        like: tensor whose device/dtype to use.
    """

    def __init__(self, sizes: Sequence[int], like: Tensor) -> None:
        sizes = [int(s) for s in sizes if int(s) > 0]
        self.n = sum(sizes)
        self.mixed = len(sizes) > 1
        if self.mixed:
            self.segment = torch.repeat_interleave(
                torch.arange(len(sizes), device=like.device),
                torch.tensor(sizes, device=like.device),
            )
            self.inv_sizes = 1.0 / torch.tensor(sizes, dtype=like.dtype, device=like.device)
            self.zeros = torch.zeros(len(sizes), dtype=like.dtype, device=like.device)

    def __call__(self, x: Tensor) -> float:
        """Norm of x (N,) as a python float (in-place on x allowed: x is a temporary)."""
        if self.n == 0:
            return 0.0
        if not self.mixed:
            return torch.linalg.vector_norm(x).item() / math.sqrt(self.n)
        sums = self.zeros.index_add(0, self.segment, x.square())
        return math.sqrt(sums.mul_(self.inv_sizes).max().item())


def _fmt(x: float) -> str:
    return f"{x:.6g}"


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
        rtol: float,
        atol: float,
        step_size: float | None,
        max_steps: int,
        stats: ODEStats,
        norm_sizes: Sequence[int] | None,
        grad: bool,
    ) -> None:
        self.func = func
        self.tab = tab
        self.coef = _Coefficients(tab, y0)
        self.times = [float(x) for x in times]
        self.t_tensor = t_tensor
        self.t_kw = {"dtype": t_dtype, "device": y0.device}
        self.rtol = rtol
        self.atol = atol
        self.step_size = step_size
        self.max_steps = max_steps
        self.stats = stats
        self.norm = _Norm(norm_sizes if norm_sizes is not None else [y0.numel()], y0)
        self.grad = grad
        self.steps = 0
        self.nonfinite_rejections = 0
        self.direction = 1.0 if len(self.times) < 2 or self.times[-1] > self.times[0] else -1.0
        self.last_h: float | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _time(self, t: float) -> Tensor:
        return torch.tensor(t, **self.t_kw)

    def _eval(self, t: float, tt: Tensor | None, y: Tensor) -> Tensor:
        self.stats.nfe += 1
        return self.func(tt if tt is not None else self._time(t), y)

    def _count_step(self, t: float, h: float) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            if self.nonfinite_rejections:
                raise self._nonfinite_near(t, h)
            raise ODEMaxStepsError(
                f"odeint: max_steps={self.max_steps} reached at t={_fmt(t)} while integrating over "
                f"[{_fmt(self.times[0])}, {_fmt(self.times[-1])}] with method "
                f"'{self.tab.name}' (step size at that point: {h:.3g}); the ODE may be stiff or "
                "blow up, or the tolerances are too tight — raise max_steps, loosen rtol/atol or "
                "use a larger step_size"
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
        self, t: float, tt: Tensor | None, y: Tensor, h: float, hh: float | Tensor, k1: Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        """Stages of one step. Returns (y1, K (S, N) detached-or-not, ks list in grad mode)."""
        tab, coef = self.tab, self.coef
        S = tab.stages
        if not self.grad:
            K = y.new_empty((S, y.shape[0]))
            K[0] = k1
            yi = y
            for i in range(1, S):
                yi = torch.addmv(y, K[:i].t(), coef.a[i], alpha=h)
                K[i] = self._eval(t + tab.c[i] * h, None, yi)
            if tab.fsal:
                y1 = yi  # last row of a == b
            else:
                y1 = torch.addmv(y, K.t(), coef.b, alpha=h)
            return y1, K, None
        ks = [k1]
        yi = y
        for i in range(1, S):
            yi = y + hh * (torch.stack(ks, 1) @ coef.a[i])
            ti = tt + tab.c[i] * hh
            ks.append(self._eval(t + tab.c[i] * h, ti, yi))
        y1 = yi if tab.fsal else y + hh * (torch.stack(ks, 1) @ coef.b)
        return y1, torch.stack(ks).detach(), ks

    def _error_ratio(self, y: Tensor, y1: Tensor, K: Tensor, h: float) -> float:
        y, y1 = y.detach(), y1.detach()
        scale = torch.maximum(y.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        r = torch.mv(K.t(), self.coef.e).div_(scale)
        return abs(h) * self.norm(r)

    def _dense(
        self, y: Tensor, y1: Tensor, K: Tensor, ks: list[Tensor] | None, hh: float | Tensor
    ) -> tuple[Tensor, ...]:
        """Coefficients of the Dormand–Prince 4th-order continuous extension on a step."""
        if ks is not None:
            k1, k7, kd = ks[0], ks[-1], torch.stack(ks, 1) @ self.coef.d
        else:
            k1, k7, kd = K[0], K[-1], torch.mv(K.t(), self.coef.d)
        ydiff = y1 - y
        bspl = hh * k1 - ydiff
        return ydiff, bspl, ydiff - hh * k7 - bspl, hh * kd

    @staticmethod
    def _interp(y: Tensor, rc: tuple[Tensor, ...], theta: float | Tensor) -> Tensor:
        ydiff, bspl, r4, r5 = rc
        th1 = 1 - theta
        return y + theta * (ydiff + th1 * (bspl + theta * (r4 + th1 * r5)))

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

    # -- drivers ----------------------------------------------------------------------------------
    def run(self, y0: Tensor, f0: Tensor | None = None, h0: float | None = None) -> list[Tensor]:
        """Integrate; returns the states at every time in ``times`` (list of (N,) tensors)."""
        if len(self.times) < 2:
            return [y0]
        if self.tab.adaptive:
            return self._run_adaptive(y0, f0, h0)
        return self._run_fixed(y0, f0)

    def _tt(self, i: int) -> Tensor | None:
        return self.t_tensor[i] if self.grad and self.t_tensor is not None else None

    def _run_fixed(self, y0: Tensor, f0: Tensor | None) -> list[Tensor]:
        assert self.step_size is not None
        times, d = self.times, self.direction
        out = [y0]
        y, t, tt = y0, times[0], self._tt(0)
        if self.grad and tt is None:
            tt = self._time(t)
        k1 = f0
        for j in range(1, len(times)):
            span = abs(times[j] - times[j - 1])
            n = max(1, math.ceil(span / self.step_size - 1e-9))
            for s in range(n):
                last = s == n - 1
                h = times[j] - t if last else d * self.step_size
                if self.grad:
                    hh = (self._tt(j) if self.t_tensor is not None else self._time(times[j])) - tt \
                        if last else h
                else:
                    hh = h
                self._count_step(t, h)
                if k1 is None:
                    k1 = self._eval(t, tt, y)
                y, _, _ = self._stages(t, tt, y, h, hh, k1)
                k1 = None
                t = times[j] if last else t + h
                if self.grad:
                    tt = tt + hh
                self.stats.accepted += 1
                if not bool(torch.isfinite(y).all()):
                    raise self._nonfinite(t, "state")
            out.append(y)
        return out

    def _run_adaptive(self, y0: Tensor, f0: Tensor | None, h0: float | None) -> list[Tensor]:
        times, d = self.times, self.direction
        T = len(times)
        t_end = times[-1]
        out = [y0]
        y, t, tt = y0, times[0], self._tt(0)
        if self.grad and tt is None:
            tt = self._time(t)
        k1 = self._eval(t, tt, y) if f0 is None else f0
        if not bool(torch.isfinite(k1).all()):
            raise self._nonfinite(t, "vector field f(t, y0)")
        span = abs(t_end - t)
        if self.step_size is not None:
            h_abs = min(float(self.step_size), span)
        elif h0 is not None:
            h_abs = min(abs(h0), span)
        else:
            h_abs = self._initial_step(t, y, k1, span)
        fac_old = 1e-4
        rejected_last = False
        j = 1
        while j < T:
            last = (t + d * 1.01 * h_abs - t_end) * d >= 0
            h = t_end - t if last else d * h_abs
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
            y1, K, ks = self._stages(t, tt, y, h, hh, k1)
            ratio = self._error_ratio(y, y1, K, h)
            if not math.isfinite(ratio):
                # A too large step can overflow: shrink it and retry (if the field is NaN beyond
                # some time, the step shrinks until max_steps / underflow -> ODENonFiniteError).
                self.stats.rejected += 1
                self.nonfinite_rejections += 1
                rejected_last = True
                h_abs *= _FAC_MIN
                continue
            fac11 = ratio ** (0.2 - 0.75 * _BETA)
            if ratio <= 1.0:
                self.stats.accepted += 1
                t_new = t_end if last else t + h
                tt_new = tt + hh if self.grad else None
                rc = None
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
                        out.append(self._interp(y, rc, theta))
                    j += 1
                y, t, tt = y1, t_new, tt_new
                k1 = ks[-1] if ks is not None else K[-1]
                fac = fac11 / fac_old**_BETA
                fac = min(_FAC_MAX, max(_FAC_MIN, _SAFETY / fac)) if fac > 0 else _FAC_MAX
                if rejected_last:
                    fac = min(fac, 1.0)
                fac_old = max(ratio, 1e-4)
                rejected_last = False
                h_abs = h_abs * fac
                if not last or self.last_h is None:
                    self.last_h = d * h_abs  # proposed next step (a clipped last step is short)
            else:
                self.stats.rejected += 1
                rejected_last = True
                h_abs = h_abs * max(_FAC_MIN, _SAFETY / fac11)
        return out


def integrate(
    func: FlatFunc,
    y0: Tensor,
    times: Sequence[float],
    method: str,
    *,
    rtol: float,
    atol: float,
    step_size: float | None,
    max_steps: int,
    stats: ODEStats,
    t_tensor: Tensor | None = None,
    t_dtype: torch.dtype | None = None,
    f0: Tensor | None = None,
    h0: float | None = None,
    norm_sizes: Sequence[int] | None = None,
) -> tuple[list[Tensor], float | None]:
    """Solve ``y' = func(t, y)`` for a flat state (no argument checking: see ``odeint``).

    Args:
        func: vector field ``(t 0-dim, y (N,)) -> (N,)``.
        y0: (N,) initial state.
        times: the T output times (python floats, strictly monotone).
        method: a key of :data:`METHODS`.
        rtol, atol: tolerances (adaptive methods).
        step_size: fixed step (required for fixed-step methods; initial step for dopri5).
        max_steps: bound on attempted steps.
        stats: counters updated in place.
        t_tensor: (T,) times as a tensor; when autograd is on, outputs are differentiable w.r.t. it.
        t_dtype: dtype of the time tensors passed to ``func`` (default: y0's).
        f0: ``func(times[0], y0)`` if already computed (saves an evaluation).
        h0: initial step guess for dopri5 (skips the initial-step selection).
        norm_sizes: segment sizes for the mixed error norm (default: one segment).

    Returns:
        (list of T states (N,), the step proposed after the last unclipped step of an adaptive
        solve (signed), or None).
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
        step_size,
        max_steps,
        stats,
        norm_sizes,
        grad=torch.is_grad_enabled(),
    )
    out = solver.run(y0, f0, h0)
    return out, solver.last_h
