"""Regular grids in one convention: axes with end points included, points in 'ij' order.

Row ``i * G1 + j`` of the points is ``(axis0[i], axis1[j])``; a field on the grid is a (G0, G1)
array indexed ``[i, j]``. One-dimensional grids (paths) are the same with one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["grid", "grid_axes", "grid_points", "resolution_pair"]


def resolution_pair(resolution: Any, dims: int = 2, minimum: int = 4) -> tuple[int, ...]:
    """An int or ``dims`` ints -> a tuple of ``dims`` ints, each >= ``minimum``.

    Raises:
        ValueError: ``"resolution: expected an int or <dims> ints ..., got ..."``.
    """
    if isinstance(resolution, int | np.integer) and not isinstance(resolution, bool):
        res = (int(resolution),) * dims
    else:
        try:
            res = tuple(resolution)
        except TypeError:
            raise ValueError(f"resolution: expected an int or {dims} ints, got {resolution!r}"
                             ) from None
    if len(res) != dims:
        raise ValueError(f"resolution: expected an int or {dims} ints, got {resolution!r}")
    if any(isinstance(r, bool) or not isinstance(r, int | np.integer) for r in res):
        raise ValueError(f"resolution: expected an int or {dims} ints, got {resolution!r}")
    if min(res) < minimum:
        raise ValueError(f"resolution: expected at least {minimum} grid points per axis, got "
                         f"{resolution!r}")
    return tuple(int(r) for r in res)


def grid_axes(bounds: Sequence[Sequence[float]], resolution: Any, minimum: int = 4
              ) -> tuple[np.ndarray, ...]:
    """The axes ``(G_k,)`` of a grid over ``bounds`` ((lo, hi) per dimension), end points
    included."""
    res = resolution_pair(resolution, len(bounds), minimum)
    return tuple(np.linspace(float(lo), float(hi), n) for (lo, hi), n in zip(bounds, res))


def grid_points(*axes: np.ndarray) -> np.ndarray:
    """All points of the grid of ``axes`` in 'ij' order: (prod G_k, d) float64."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def grid(bounds: Sequence[Sequence[float]], resolution: Any, minimum: int = 4
         ) -> tuple[np.ndarray, ...]:
    """Axes and points of a regular grid: ``(axis0, ..., points)`` with points (prod G_k, d) in
    'ij' order."""
    axes = grid_axes(bounds, resolution, minimum)
    return (*axes, grid_points(*axes))
