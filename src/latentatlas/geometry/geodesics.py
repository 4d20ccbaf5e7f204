"""Geodesics of a 2-D metric by discrete energy minimisation, and path lengths.

A path is ``n`` points ``x_0 = a, ..., x_{n-1} = b``. Its discrete energy
``E = (n - 1) * sum_i dx_i^T g(m_i) dx_i`` (``dx_i = x_{i+1} - x_i``, ``m_i`` the segment midpoint)
is minimised over the interior points with L-BFGS-B (scipy; bounds optional), starting from the
straight line (coarse-to-fine: the path is first optimised with fewer points, then refined). The
energy is not convex: a straight start can stay on a symmetric critical path (e.g. over a bump of the
metric), so ``starts > 1`` adds perturbed starts (the chord bent by ``spread * |b - a|``
sideways, both sides, then higher modes) and keeps the shortest. Energy minimisers are geodesics
traversed at constant speed; the result is finally resampled at equal metric arc length.

Straightness is measured by the deviation from the chord in metric units
(:func:`chord_deviation`): for every geodesic point, the metric length of the straight segment from
its nearest chord point to it; the largest over the path. For the Poincare half-plane and the
Gaussian (mu, sigma) Fisher metric this has a closed form (tests/test_geodesic_deviation.py).

Lengths use Simpson's rule on every segment:
``l_i = |dx_i|_g`` averaged as ``(f(x_i) + 4 f(m_i) + f(x_{i+1})) / 6`` with ``f(y) = sqrt(dx^T g(y) dx)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .metric import as_metric_fn

__all__ = ["Geodesic", "chord_deviation", "geodesic", "path_length"]

log = logging.getLogger(__name__)


@dataclass
class Geodesic:
    """A geodesic between two points.

    Attributes:
        points: (n, 2) points at equal metric arc length, from ``a`` to ``b``.
        length: its metric length.
        straight_length: metric length of the straight segment from ``a`` to ``b``.
        energy: final discrete energy (``length**2`` for a constant-speed path).
        deviation: largest metric length from the chord to the path (:func:`chord_deviation`).
        start_lengths: (starts,) length reached from each initialisation (straight first).
    """

    points: np.ndarray
    length: float
    straight_length: float
    energy: float
    deviation: float = float("nan")
    start_lengths: tuple[float, ...] = ()

    @property
    def relative_deviation(self) -> float:
        """``deviation / length`` (0 for a straight geodesic)."""
        return self.deviation / self.length if self.length > 0 else 0.0

    @property
    def straightness(self) -> float:
        """``straight_length / length`` (>= 1; 1 for a straight geodesic)."""
        return self.straight_length / self.length if self.length > 0 else 1.0


def _point(x: Any, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64)) if not isinstance(x, Tensor) else x
    t = t.detach().to(torch.float64).reshape(-1)
    if t.shape != (2,) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected 2 finite coordinates, got {np.asarray(x).tolist()}")
    return t


def _segment_lengths(fn: Callable[[Tensor], Tensor], pts: Tensor) -> Tensor:
    dx = pts[1:] - pts[:-1]
    mid = 0.5 * (pts[1:] + pts[:-1])
    g_all = fn(torch.cat([pts, mid]))
    g_pts, g_mid = g_all[: len(pts)], g_all[len(pts) :]

    def norm(g: Tensor) -> Tensor:
        return torch.einsum("ni,nij,nj->n", dx, g, dx).clamp_min(0).sqrt()

    return (norm(g_pts[:-1]) + 4 * norm(g_mid) + norm(g_pts[1:])) / 6


def path_length(metric_fn: Any, points: Any) -> float:
    """Metric length of the polygonal path ``points`` (n, 2) (Simpson's rule per segment).

    ``metric_fn``: anything :func:`~latentatlas.geometry.metric.as_metric_fn` accepts.
    """
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64)) if not isinstance(points, Tensor) else points
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise ValueError(f"points: expected shape (n >= 2, 2), got {tuple(pts.shape)}")
    fn = as_metric_fn(metric_fn)
    with torch.no_grad():
        return float(_segment_lengths(fn, pts.detach().to(torch.float64)).sum())


def chord_deviation(metric_fn: Any, points: Any, pieces: int = 32) -> tuple[float, int]:
    """Largest deviation of a path from its chord, in metric units.

    For every point ``p_i`` of ``points`` (n, 2) (chord: ``points[0] -> points[-1]``), the metric
    length (Simpson's rule on ``pieces`` pieces) of the straight segment from the nearest chord point
    to ``p_i``.

    Returns:
        ``(deviation, index)``: the largest such length and the index of its point.
    """
    pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points,
                     dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise ValueError(f"points: expected shape (n >= 2, 2), got {pts.shape}")
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ValueError(f"pieces: expected a positive int, got {pieces!r}")
    a, b = pts[0], pts[-1]
    ab = b - a
    den = float(ab @ ab)
    s = np.clip((pts - a) @ ab / den, 0.0, 1.0) if den > 0 else np.zeros(len(pts))
    foot = a + s[:, None] * ab
    fn = as_metric_fn(metric_fn)
    w = np.linspace(0.0, 1.0, 2 * pieces + 1)  # piece ends and midpoints
    q = foot[:, None, :] + w[None, :, None] * (pts - foot)[:, None, :]  # (n, 2 pieces + 1, 2)
    with torch.no_grad():
        g = fn(torch.as_tensor(q.reshape(-1, 2))).reshape(len(pts), -1, 2, 2)
        dx = torch.as_tensor((pts - foot) / pieces)  # (n, 2), the same for every piece
        f = torch.einsum("ni,nkij,nj->nk", dx, g, dx).clamp_min(0).sqrt()
        lengths = ((f[:, 0:-1:2] + 4 * f[:, 1::2] + f[:, 2::2]) / 6).sum(1)
    i = int(torch.argmax(lengths))
    return float(lengths[i]), i


def _start(pa: Tensor, pb: Tensor, size: int, k: int, spread: float) -> Tensor:
    """Initial path ``k`` (0: the chord; then the chord bent sideways by ``spread |b - a|``,
    alternating sides, in modes 1, 1, 2, 2, ...). (size, 2)."""
    s = torch.linspace(0, 1, size, dtype=torch.float64)[:, None]
    pts = pa + s * (pb - pa)
    if k == 0:
        return pts
    normal = torch.stack([-(pb - pa)[1], (pb - pa)[0]])
    mode = (k + 1) // 2
    sign = 1.0 if k % 2 else -1.0
    return pts + sign * spread * torch.sin(mode * math.pi * s) * normal


def _resample(fn: Callable[[Tensor], Tensor], pts: Tensor, n: int) -> Tensor:
    """Points at equal metric arc length along the polygon ``pts`` (linear within segments)."""
    seg = _segment_lengths(fn, pts)
    cum = torch.cat([seg.new_zeros(1), torch.cumsum(seg, 0)])
    total = cum[-1]
    if not total > 0:
        return pts[torch.linspace(0, len(pts) - 1, n).round().long()]
    target = torch.linspace(0, 1, n, dtype=pts.dtype) * total
    i = torch.searchsorted(cum, target, right=True) - 1
    i = i.clamp(0, len(seg) - 1)
    w = ((target - cum[i]) / seg[i].clamp_min(torch.finfo(pts.dtype).tiny)).clamp(0, 1)
    out = pts[i] + w[:, None] * (pts[i + 1] - pts[i])
    out[0], out[-1] = pts[0], pts[-1]
    return out


def _minimise(fn, a: Tensor, b: Tensor, init: Tensor, iters: int, bounds: Tensor | None, tol: float):
    """Minimise the discrete energy over the interior points with L-BFGS-B (scipy)."""
    from scipy.optimize import minimize

    n = init.shape[0] + 2
    shape = init.shape

    def energy(z: Tensor) -> Tensor:
        p = torch.cat([a[None], z, b[None]])
        dx = p[1:] - p[:-1]
        g = fn(0.5 * (p[1:] + p[:-1]))
        return (n - 1) * torch.einsum("ni,nij,nj->", dx, g, dx)

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.enable_grad():
            z = torch.as_tensor(flat, dtype=a.dtype).reshape(shape).requires_grad_(True)
            e = energy(z)
            if not torch.isfinite(e):
                raise FloatingPointError(
                    "geodesic: the metric became non-finite along the path; pass `bounds` to "
                    "keep the path inside the metric's domain"
                )
            (grad,) = torch.autograd.grad(e, z)
        return float(e.detach()), grad.reshape(-1).numpy().astype(np.float64)

    box = None
    if bounds is not None:
        lo = np.broadcast_to(bounds[:, 0].numpy(), shape).reshape(-1)
        hi = np.broadcast_to(bounds[:, 1].numpy(), shape).reshape(-1)
        box = list(zip(lo, hi))
    x0 = init.detach().numpy().reshape(-1).astype(np.float64)
    if box is not None:
        x0 = np.clip(x0, [lo_ for lo_, _ in box], [hi_ for _, hi_ in box])
    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=box,
        options={"maxiter": iters, "gtol": tol, "ftol": tol * 1e-2, "maxcor": 20},
    )
    z = torch.as_tensor(res.x, dtype=a.dtype).reshape(shape)
    return torch.cat([a[None], z, b[None]]), float(res.fun)


def geodesic(
    metric_fn: Any,
    a: Any,
    b: Any,
    n: int = 64,
    iters: int = 300,
    bounds: Any = None,
    tol: float = 1e-7,
    levels: int = 3,
    starts: int = 1,
    spread: float = 0.25,
) -> Geodesic:
    """Shortest path between ``a`` and ``b`` for the metric ``metric_fn``.

    Args:
        metric_fn: anything :func:`~latentatlas.geometry.metric.as_metric_fn` accepts (a Potential,
            an Atlas-like object, a callable (N, 2) -> (N, 2, 2) on float64 tensors).
        a, b: (2,) end points.
        n: number of points of the returned path (>= 3).
        iters: L-BFGS-B iterations per refinement level.
        bounds: optional (2, 2) box (low, high per coordinate) that interior points are clamped to.
        tol: L-BFGS-B projected-gradient tolerance (``gtol``; ``ftol = tol / 100``).
        levels: coarse-to-fine levels (the first uses about ``n / 2**(levels-1)`` points, >= 8).
        starts: initialisations (the straight line, then perturbed starts); the shortest is kept.
        spread: sideways amplitude of the perturbed starts, as a fraction of ``|b - a|``.

    Returns:
        A :class:`Geodesic` (points at equal metric arc length, its length, the straight length,
        the deviation from the chord and the length reached from each start).
    """
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"n: expected an int >= 3, got {n!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters: expected a positive int, got {iters!r}")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels: expected a positive int, got {levels!r}")
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise ValueError(f"starts: expected a positive int, got {starts!r}")
    if not (isinstance(spread, int | float) and 0 < spread < 10):
        raise ValueError(f"spread: expected a number in (0, 10), got {spread!r}")
    pa, pb = _point(a, "a"), _point(b, "b")
    fn = as_metric_fn(metric_fn, create_graph=True)
    box = None
    if bounds is not None:
        box = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
        if box.shape != (2, 2) or not bool((box[:, 1] > box[:, 0]).all()):
            raise ValueError(f"bounds: expected (2, 2) low < high per coordinate, got {box.tolist()}")

    sizes = [n]
    for _ in range(levels - 1):
        m = max(8, (sizes[-1] + 1) // 2)
        if m >= sizes[-1]:
            break
        sizes.append(m)
    sizes = sizes[::-1]
    best: tuple[float, Tensor, float] | None = None
    lengths = []
    for k in range(starts):
        pts = _start(pa, pb, sizes[0], k, spread)
        if box is not None:
            pts = torch.maximum(torch.minimum(pts, box[:, 1]), box[:, 0])
        energy = float("nan")
        for size in sizes:
            with torch.no_grad():
                pts = _resample(fn, pts, size)
            pts, energy = _minimise(fn, pa, pb, pts[1:-1], iters, box, tol)
        with torch.no_grad():
            pts = _resample(fn, pts, n)
            length = float(_segment_lengths(fn, pts).sum())
        lengths.append(length)
        if best is None or length < best[0]:
            best = (length, pts, energy)
    length, pts, energy = best
    with torch.no_grad():
        s = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
        straight = float(_segment_lengths(fn, pa + s * (pb - pa)).sum())
    deviation, _ = chord_deviation(metric_fn, pts.numpy())
    return Geodesic(points=pts.numpy(), length=length, straight_length=straight, energy=energy,
                    deviation=deviation, start_lengths=tuple(lengths))
