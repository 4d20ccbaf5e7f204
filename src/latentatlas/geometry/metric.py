"""The Fisher metric: evaluation anywhere, coordinate changes, volume element, scalar curvature.

A *metric function* maps points ``t`` (N, 2) (torch tensor) to metric tensors (N, 2, 2). It can be a
fitted potential's Hessian, an analytic metric, or the bilinear interpolation of a gridded metric
(:func:`grid_metric_fn`). :func:`as_metric_fn` turns any of these (or an Atlas-like object) into one.

Curvature sign convention: for a 2-D metric the Gaussian curvature K is computed by Brioschi's
formula and the scalar curvature is ``R = 2 K`` (sphere of radius r: R = 2 / r^2; hyperbolic
half-plane ``diag(1, 1) / y^2``: R = -2; Fisher metric of N(mu, sigma): R = -1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_metric_fn",
    "change_coordinates",
    "grid_metric_fn",
    "metric",
    "scalar_curvature",
    "volume_element",
]

MetricFn = Callable[[Tensor], Tensor]


def _as_points(t: Any, name: str = "t", dim: int = 2) -> tuple[Tensor, bool]:
    is_numpy = not isinstance(t, Tensor)
    x = torch.as_tensor(np.asarray(t, dtype=np.float64)) if is_numpy else t
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), got {tuple(x.shape)}")
    return x, is_numpy


def grid_metric_fn(axis0: Any, axis1: Any, metric: Any) -> MetricFn:
    """Bilinear interpolation of a gridded metric.

    Args:
        axis0, axis1: (G0,), (G1,) increasing grid axes (need not be uniform).
        metric: (G0, G1, 2, 2) metric on the grid ('ij' order).

    Returns:
        A metric function (N, 2) -> (N, 2, 2) (dtype/device of its input). Points outside the grid
        are clamped to its border. Piecewise bilinear: differentiable almost everywhere.
    """
    a0 = torch.as_tensor(np.asarray(axis0, dtype=np.float64))
    a1 = torch.as_tensor(np.asarray(axis1, dtype=np.float64))
    m = torch.as_tensor(np.array(metric, dtype=np.float64))
    if a0.ndim != 1 or a1.ndim != 1 or len(a0) < 2 or len(a1) < 2:
        raise ValueError(
            f"axis0, axis1: expected 1-D axes of >= 2 points, got shapes {tuple(a0.shape)}, "
            f"{tuple(a1.shape)}"
        )
    if m.shape != (len(a0), len(a1), 2, 2):
        raise ValueError(
            f"metric: expected shape ({len(a0)}, {len(a1)}, 2, 2), got {tuple(m.shape)}"
        )
    if not bool(torch.isfinite(m).all()):
        raise ValueError("metric: expected finite values")

    def fn(t: Tensor) -> Tensor:
        x, _ = _as_points(t)
        ax0, ax1, mm = a0.to(x), a1.to(x), m.to(x)
        out = []
        idx = []
        for k, ax in enumerate((ax0, ax1)):
            v = x[:, k].clamp(ax[0], ax[-1])
            i = torch.searchsorted(ax.detach(), v.detach().contiguous(), right=True) - 1
            i = i.clamp(0, len(ax) - 2)
            w = (v - ax[i]) / (ax[i + 1] - ax[i])
            idx.append(i)
            out.append(w)
        i, j = idx
        u, v = out
        u, v = u[:, None, None], v[:, None, None]
        return (
            (1 - u) * (1 - v) * mm[i, j]
            + u * (1 - v) * mm[i + 1, j]
            + (1 - u) * v * mm[i, j + 1]
            + u * v * mm[i + 1, j + 1]
        )

    return fn


def as_metric_fn(obj: Any, create_graph: bool = False) -> MetricFn:
    """A metric function from a potential, an Atlas-like object or a callable.

    Accepted ``obj``: an object with a ``hessian(t, create_graph=...)`` method (a fitted
    :class:`~latentatlas.geometry.potential.Potential`); an object whose ``potential`` (or
    ``potential_model``) attribute is such a potential; an object with gridded ``axis0``, ``axis1``, ``metric`` (G0, G1, 2, 2) arrays
    (an Atlas: bilinear interpolation); or a callable (N, 2) -> (N, 2, 2).
    """
    if callable(getattr(obj, "hessian", None)):
        pot = obj
        return lambda t: pot.hessian(t, create_graph=create_graph)
    for attr in ("potential", "potential_model"):
        inner = getattr(obj, attr, None)
        if callable(getattr(inner, "hessian", None)):
            return lambda t, m=inner: m.hessian(t, create_graph=create_graph)
    if all(hasattr(obj, k) for k in ("axis0", "axis1", "metric")) and not callable(obj.metric):
        return grid_metric_fn(obj.axis0, obj.axis1, obj.metric)
    if callable(obj):
        return obj
    raise ValueError(
        "obj: expected a Potential, an object with a `potential` (Potential) or gridded "
        f"`axis0`/`axis1`/`metric`, or a callable (N, 2) -> (N, 2, 2); got {type(obj).__qualname__}"
    )


def metric(obj: Any, t: Any) -> Any:
    """The metric of ``obj`` (see :func:`as_metric_fn`) at points ``t`` (N, 2) -> (N, 2, 2).

    Returns a numpy array for numpy input, a (detached) tensor for tensor input.
    """
    x, is_numpy = _as_points(t)
    g = as_metric_fn(obj)(x)
    g = g.detach()
    return g.cpu().numpy() if is_numpy else g


def change_coordinates(g: Any, jacobian: Any) -> Any:
    """Pull back a metric to new coordinates u with t = t(u): ``J^T g J``, ``J = dt/du``.

    Args:
        g: (N, d, d) metric in the t coordinates.
        jacobian: (N, d, d) Jacobian ``J[n, a, b] = dt_a / du_b`` (or (d, d) for a linear change).

    Returns:
        (N, d, d) metric in the u coordinates (numpy for numpy input).
    """
    is_numpy = not isinstance(g, Tensor)
    gt = torch.as_tensor(np.asarray(g, dtype=np.float64)) if is_numpy else g
    jt = torch.as_tensor(np.asarray(jacobian, dtype=np.float64)) if not isinstance(jacobian, Tensor) else jacobian
    jt = jt.to(gt)
    if gt.ndim != 3 or gt.shape[1] != gt.shape[2]:
        raise ValueError(f"g: expected shape (N, d, d), got {tuple(gt.shape)}")
    d = gt.shape[1]
    if jt.shape == (d, d):
        jt = jt.expand(gt.shape[0], d, d)
    if jt.shape != gt.shape:
        raise ValueError(f"jacobian: expected shape {tuple(gt.shape)} or ({d}, {d}), got {tuple(jt.shape)}")
    out = jt.transpose(1, 2) @ gt @ jt
    return out.numpy() if is_numpy else out


def volume_element(g: Any) -> Any:
    """Riemannian volume element ``sqrt(det g)``: (..., d, d) -> (...) (negative dets clamp to 0)."""
    is_numpy = not isinstance(g, Tensor)
    gt = torch.as_tensor(np.asarray(g, dtype=np.float64)) if is_numpy else g
    if gt.ndim < 2 or gt.shape[-1] != gt.shape[-2]:
        raise ValueError(f"g: expected shape (..., d, d), got {tuple(gt.shape)}")
    out = torch.linalg.det(gt).clamp_min(0).sqrt()
    return out.numpy() if is_numpy else out


def _brioschi(E, F, G, Eu, Ev, Fu, Fv, Gu, Gv, Evv, Fuv, Guu):  # noqa: N803
    """Gaussian curvature from E, F, G and their derivatives (u = t0, v = t1)."""
    a = -0.5 * Evv + Fuv - 0.5 * Guu
    det1 = (
        a * (E * G - F * F)
        - 0.5 * Eu * ((Fv - 0.5 * Gu) * G - F * 0.5 * Gv)
        + (Fu - 0.5 * Ev) * ((Fv - 0.5 * Gu) * F - E * 0.5 * Gv)
    )
    det2 = -0.5 * Ev * (0.5 * Ev * G - F * 0.5 * Gu) + 0.5 * Gu * (0.5 * Ev * F - E * 0.5 * Gu)
    return (det1 - det2) / (E * G - F * F) ** 2


def scalar_curvature(
    metric_fn: Any, t: Any, method: str = "auto", step: float | None = None
) -> Any:
    """Scalar curvature ``R = 2 K`` of a 2-D metric at points ``t`` (N, 2) -> (N,).

    K is Brioschi's formula in the first and second derivatives of ``E = g00, F = g01, G = g11``.

    Args:
        metric_fn: anything :func:`as_metric_fn` accepts (a Potential uses 4th-order autograd).
        t: (N, 2) points.
        method: "autograd" (derivatives by autograd, needs a differentiable metric function),
            "fd" (central finite differences), or "auto" (autograd when the metric depends
            differentiably on t, else finite differences).
        step: finite-difference step in coordinate units (default ``eps**(1/4) * max(1, |t|)``).

    Returns:
        (N,) scalar curvature (numpy for numpy input).
    """
    if method not in ("auto", "autograd", "fd"):
        raise ValueError(f"method: expected 'auto', 'autograd' or 'fd', got {method!r}")
    x, is_numpy = _as_points(t)
    fn = as_metric_fn(metric_fn, create_graph=True)
    derivs = None
    if method in ("auto", "autograd"):
        with torch.enable_grad():
            xx = x.detach().clone().requires_grad_(True)
            g = fn(xx)
            if g.requires_grad:
                E, F, G = g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]

                def d(f: Tensor) -> Tensor:
                    (out,) = torch.autograd.grad(f.sum(), xx, create_graph=True, allow_unused=True)
                    return torch.zeros_like(xx) if out is None else out

                dE, dF, dG = d(E), d(F), d(G)
                Evv = d(dE[:, 1])[:, 1]
                Fuv = d(dF[:, 0])[:, 1]
                Guu = d(dG[:, 0])[:, 0]
                derivs = [E, F, G, dE[:, 0], dE[:, 1], dF[:, 0], dF[:, 1], dG[:, 0], dG[:, 1],
                          Evv, Fuv, Guu]
                derivs = [v.detach() for v in derivs]
            elif method == "autograd":
                raise ValueError(
                    "metric_fn: the metric does not depend differentiably on t; use method='fd'"
                )
    if derivs is None:
        with torch.no_grad():
            if step is None:
                eps = torch.finfo(x.dtype).eps
                h = eps**0.25 * x.abs().clamp_min(1.0)
            else:
                h = torch.full_like(x, float(step))
            e0 = torch.zeros_like(x)
            e0[:, 0] = h[:, 0]
            e1 = torch.zeros_like(x)
            e1[:, 1] = h[:, 1]

            def comp(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
                g = fn(y)
                return g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]

            c = comp(x)
            pu, mu = comp(x + e0), comp(x - e0)
            pv, mv = comp(x + e1), comp(x - e1)
            pp, pm = comp(x + e0 + e1), comp(x + e0 - e1)
            mp, mm = comp(x - e0 + e1), comp(x - e0 - e1)
            hu, hv = h[:, 0], h[:, 1]
            du = [(a - b) / (2 * hu) for a, b in zip(pu, mu)]
            dv = [(a - b) / (2 * hv) for a, b in zip(pv, mv)]
            Evv = (pv[0] - 2 * c[0] + mv[0]) / hv**2
            Guu = (pu[2] - 2 * c[2] + mu[2]) / hu**2
            Fuv = (pp[1] - pm[1] - mp[1] + mm[1]) / (4 * hu * hv)
            derivs = [c[0], c[1], c[2], du[0], dv[0], du[1], dv[1], du[2], dv[2], Evv, Fuv, Guu]
    curv = 2.0 * _brioschi(*derivs)
    return curv.cpu().numpy() if is_numpy else curv
