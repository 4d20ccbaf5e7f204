"""The adjoint method (Chen et al., 2018): gradients of an ODE solve in memory independent of steps.

For ``y' = f(t, y; w)`` and a loss ``L(y(t_0), ..., y(t_{T-1}))``, the adjoint ``a(t) = dL/dy(t)``
solves ``da/dt = -a^T df/dy`` backwards in time, jumping by ``dL/dy_i`` at every output time, and

    dL/dw   = ∫ a^T df/dw dt   (accumulated as  dg/dt = -a^T df/dw  integrated backwards, g = 0 at
                                the last time),
    dL/dy0  = a(t_0) + dL/dy_0,
    dL/dt_i = (dL/dy_i)^T f(t_i, y_i)          for i >= 1,
    dL/dt_0 = -a(t_0)^T f(t_0, y_0)            (a(t_0) before adding dL/dy_0).

(The time gradients follow from ``y(t_i) = Phi(t_i, t_0, y_0)`` and ``dPhi/dt_0 = -dPhi/dy_0 f(t_0,
y_0)``; later outputs do not depend on an interior ``t_i``.)

The backward pass re-integrates the state together with ``(a, g)`` as one flat augmented state
``[y, a, g]`` on every interval ``[t_i -> t_{i-1}]``, restarting ``y`` from the stored forward output
``y_i`` (as torchdiffeq does). Every evaluation of the augmented dynamics builds and frees a small
autograd graph of one ``f`` call, so the memory does not grow with the number of solver steps: only
the T outputs are kept from the forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .solvers import EventFunc, FlatFunc, Norm, ODEError, ODEStats, StepOptions, integrate

__all__ = ["AdjointSettings", "odeint_adjoint_flat"]


@dataclass
class AdjointSettings:
    """The backward (adjoint) solve's method, tolerances and step options.

    Attributes:
        method, rtol, atol, opts: as for the forward solve.
        seminorm: leave the parameter part of the adjoint state out of the error norm.
        state_norm: the forward solve's custom norm of a flat (N,) state, if any: the backward
            norm is then ``max(state_norm(y), state_norm(a), mixed RMS of the parameter parts)``.
    """

    method: str
    rtol: float | Tensor
    atol: float | Tensor
    opts: StepOptions
    seminorm: bool = False
    state_norm: Callable[[Tensor], float] | None = None


@dataclass
class _Spec:
    func: FlatFunc
    params: list[Tensor]
    times: list[float]
    method: str
    rtol: float | Tensor
    atol: float | Tensor
    opts: StepOptions
    stats: ODEStats
    norm_sizes: list[int]
    f0: Tensor | None
    settings: AdjointSettings
    event: EventFunc | None = None
    event_t: float | None = None


def _backward_norm(
    spec: _Spec, N: int, sizes: list[int], like: Tensor
) -> Callable[[Tensor], float]:
    """Error norm of the augmented state [y (N,), a (N,), g (P,)] of the backward solve."""
    st = spec.settings
    if st.state_norm is None:
        return Norm(list(spec.norm_sizes) * 2 + ([] if st.seminorm else sizes), like)
    state_norm = st.state_norm
    pnorm = None if st.seminorm or not sizes else Norm(sizes, like)

    def norm(x: Tensor) -> float:
        v = max(state_norm(x[:N]), state_norm(x[N : 2 * N]))
        return max(v, pnorm(x[2 * N :])) if pnorm is not None else v

    return norm


def _warn_missing_params(out: Tensor, known: Sequence[Tensor]) -> None:
    """Warn if ``out`` depends on leaf tensors requiring grad that are not in ``known``.

    With the adjoint, only ``params`` receive gradients; anything else ``f`` uses would silently
    get none. Walks the autograd graph of one evaluation of ``f`` (once per backward).
    """
    known_ids = {id(k) for k in known}
    missing: list[Tensor] = []
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        var = getattr(node, "variable", None)  # AccumulateGrad nodes hold a leaf
        if var is not None:
            if id(var) not in known_ids:
                missing.append(var)
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    if missing:
        shapes = ", ".join(str(tuple(m.shape)) for m in missing[:8])
        warnings.warn(
            f"odeint(adjoint=True): f depends on {len(missing)} tensor(s) that require grad but "
            f"are not in params (shapes {shapes}); the adjoint gives them no gradient. Pass them "
            "in params= (default: f.parameters() when f is an nn.Module).",
            stacklevel=2,
        )


def _augmented_tol(tol: float | Tensor, P: int) -> float | Tensor:
    """Per-element tolerance (N,) -> (2N + P,) for [y, a, g]: the state's for y and a, its
    minimum for the parameter gradients."""
    if not isinstance(tol, Tensor):
        return tol
    return torch.cat([tol, tol, tol.min().expand(P)])


class _OdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: _Spec, t: Tensor, y0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            ys, _, event_t = integrate(
                spec.func,
                y0,
                spec.times,
                spec.method,
                rtol=spec.rtol,
                atol=spec.atol,
                opts=spec.opts,
                stats=spec.stats,
                t_dtype=t.dtype,
                f0=spec.f0,
                norm_sizes=spec.norm_sizes,
                event=spec.event,
            )
            out = torch.stack(ys)
        spec.f0 = None
        if event_t is not None:  # backward integrates over [t0, event time] (a constant here)
            spec.event_t = event_t
            spec.times = [spec.times[0], event_t]
        ctx.spec = spec
        ctx.save_for_backward(t, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        spec: _Spec = ctx.spec
        t, ys = ctx.saved_tensors
        func, params = spec.func, spec.params
        T, N = ys.shape
        t_kw = {"dtype": t.dtype, "device": t.device}
        want_t = ctx.needs_input_grad[1]
        sizes = [p.numel() for p in params]
        P = sum(sizes)
        bstats = ODEStats()
        checked = [False]

        def aug(tt: Tensor, s: Tensor) -> Tensor:
            y = s[:N]
            a = s[N : 2 * N]
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                fy = func(tt, y)
                if fy.requires_grad:
                    if not checked[0]:
                        checked[0] = True
                        _warn_missing_params(fy, [y, *params])
                    # retain_graph: f may use tensors computed once outside the solve (e.g. a
                    # context embedding); their graph is shared by all evaluations. The graph of
                    # this evaluation itself dies with fy when aug returns.
                    grads = torch.autograd.grad(
                        fy, (y, *params), -a, allow_unused=True, retain_graph=True
                    )
                else:
                    grads = (None,) * (1 + len(params))
            parts = [fy.detach()]
            parts.append(grads[0] if grads[0] is not None else torch.zeros_like(a))
            for g, p in zip(grads[1:], params):
                parts.append(g.reshape(-1) if g is not None else p.new_zeros(p.numel()))
            return torch.cat(parts)

        a = torch.zeros_like(grad_ys[0])
        g = ys.new_zeros(P)
        grad_t = torch.zeros(T, **t_kw) if want_t else None
        times = spec.times
        st = spec.settings
        b_opts = replace(st.opts, norm=_backward_norm(spec, N, sizes, ys))
        b_rtol, b_atol = _augmented_tol(st.rtol, P), _augmented_tol(st.atol, P)
        h0: float | None = None
        with torch.no_grad():
            for i in range(T - 1, 0, -1):
                a = a + grad_ys[i]
                if want_t:
                    fi = func(torch.tensor(times[i], **t_kw), ys[i])
                    bstats.nfe += 1
                    grad_t[i] = torch.dot(fi, grad_ys[i]).to(t.dtype)
                try:
                    out, h_last, _ = integrate(
                        aug,
                        torch.cat([ys[i], a, g]),
                        [times[i], times[i - 1]],
                        st.method,
                        rtol=b_rtol,
                        atol=b_atol,
                        opts=b_opts,
                        stats=bstats,
                        t_dtype=t.dtype,
                        h0=h0,
                    )
                except ODEError as exc:  # say that it was the backward solve
                    raise type(exc)(f"adjoint backward pass: {exc}") from exc
                if h_last is not None:
                    h0 = h_last  # next interval: same direction, similar dynamics
                a = out[-1][N : 2 * N]
                g = out[-1][2 * N :]
            if want_t:
                # dL/dt0 = -a(t0)^T f(t0, y0), with a(t0) not including dL/dy(t0) itself
                f0 = func(torch.tensor(times[0], **t_kw), ys[0])
                bstats.nfe += 1
                grad_t[0] = -torch.dot(f0, a).to(t.dtype)
            grad_y0 = a + grad_ys[0]
            if want_t and spec.event_t is not None:
                grad_t[1:] = 0  # t[1] only bounded the event search; the event time is constant
        st = spec.stats
        st.nfe_backward = (st.nfe_backward or 0) + bstats.nfe
        st.accepted_backward = (st.accepted_backward or 0) + bstats.accepted
        st.rejected_backward = (st.rejected_backward or 0) + bstats.rejected
        grad_params = []
        offset = 0
        for p, n in zip(params, sizes):
            grad_params.append(g[offset : offset + n].view_as(p))
            offset += n
        return (None, grad_t, grad_y0, *grad_params)


def odeint_adjoint_flat(
    func: FlatFunc,
    y0: Tensor,
    t: Tensor,
    times: Sequence[float],
    method: str,
    *,
    rtol: float | Tensor,
    atol: float | Tensor,
    opts: StepOptions,
    stats: ODEStats,
    params: Sequence[Tensor],
    norm_sizes: Sequence[int],
    settings: AdjointSettings,
    f0: Tensor | None = None,
    event: EventFunc | None = None,
) -> tuple[Tensor, float | None]:
    """Adjoint-differentiable solve of a flat state; returns (T, N) outputs and the event time.

    Args:
        func: flat vector field ``(t 0-dim, y (N,)) -> (N,)`` that uses ``params``.
        y0: (N,) initial state.
        t: (T,) output times (tensor; gradients flow to it when it requires grad).
        times: the same times as python floats.
        params: tensors (requiring grad) that ``func`` depends on; receive ``dL/dw``.
        norm_sizes: segment sizes of the state for the mixed error norm.
        f0: ``func(t[0], y0)`` if already computed (saves one evaluation).
        settings: the backward solve's method, tolerances and options.
        event: terminal event function (then T = 2 and the outputs are y at (t0, event time);
            the backward solve treats the event time as a constant).
        Other arguments as in :func:`latentatlas.ode.solvers.integrate`.
    """
    spec = _Spec(
        func, list(params), [float(x) for x in times], method, rtol, atol, opts,
        stats, list(norm_sizes), f0, settings, event,
    )
    ys = _OdeintAdjoint.apply(spec, t, y0, *params)
    return ys, spec.event_t
