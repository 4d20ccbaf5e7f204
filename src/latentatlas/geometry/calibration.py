"""Reference sets with known box-counting dimension, to calibrate :mod:`.zoom` at the window sizes
the pipeline uses (tests and ``benchmarks/calibration.py``).

- straight boundaries at any angle (dimension 1);
- the Koch snowflake (boundary dimension ``log 4 / log 3 = 1.2619``), labelled exactly to any depth
  by a vectorised recursion (the snowflake is its base triangle plus every added tent triangle; a
  point can only be in the tents of a segment whose bounding triangle holds it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["KOCH_DIMENSION", "koch_inside", "koch_polyline", "koch_zoom_dimensions",
           "line_zoom_dimensions"]

KOCH_DIMENSION = math.log(4) / math.log(3)
_ROT60 = np.array([[0.5, -math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]])
_BASE = np.array([[0.0, 0.0], [0.5, math.sqrt(3) / 2], [1.0, 0.0]])


def koch_polyline(level: int) -> np.ndarray:
    """Vertices (4**level * 3 + 1, 2) of the Koch snowflake on the unit triangle (closed: the last
    vertex repeats the first); every vertex lies on the limit curve."""
    pts = np.concatenate([_BASE, _BASE[:1]])
    for _ in range(level):
        a, b = pts[:-1], pts[1:]
        d = (b - a) / 3
        p1, p3 = a + d, a + 2 * d
        p2 = p1 + d @ _ROT60.T
        pts = np.concatenate([np.stack([a, p1, p2, p3], axis=1).reshape(-1, 2), pts[-1:]])
    return pts


def _in_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    def cross(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (v[:, 0] - u[:, 0]) * (w[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (w[:, 0] - u[:, 0])

    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def koch_inside(points: np.ndarray, depth: int = 12) -> np.ndarray:
    """1 inside the level-``depth`` Koch snowflake on the unit triangle, else 0. (B, 2) -> (B,)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(p)
    tri = [np.broadcast_to(v, (n, 2)) for v in _BASE]
    inside = _in_triangle(p, *tri)
    idx = np.arange(n)
    a = np.concatenate([np.broadcast_to(_BASE[k], (n, 2)) for k in range(3)])
    b = np.concatenate([np.broadcast_to(_BASE[(k + 1) % 3], (n, 2)) for k in range(3)])
    idx = np.tile(idx, 3)
    for _ in range(depth):
        keep = ~inside[idx]
        idx, a, b = idx[keep], a[keep], b[keep]
        d = (b - a) / 3
        p1, p3 = a + d, a + 2 * d
        p2 = p1 + d @ _ROT60.T
        near = _in_triangle(p[idx], a, p2, b)  # the curve over a -> b stays in this triangle
        idx, a, b, p1, p2, p3 = idx[near], a[near], b[near], p1[near], p2[near], p3[near]
        inside[idx[_in_triangle(p[idx], p1, p2, p3)]] = True
        idx = np.tile(idx, 4)
        a, b = np.concatenate([a, p1, p2, p3]), np.concatenate([p1, p2, p3, b])
        if len(idx) == 0:
            break
    return inside.astype(np.int64)


def line_zoom_dimensions(resolution: int = 32, angles: Sequence[float] = (0.0, 0.3, 0.7854, 1.2),
                         refine: int = 3, seed: int = 0) -> np.ndarray:
    """Dimension read by :func:`~latentatlas.geometry.zoom.zoom_series` on a straight boundary
    through a window of ``resolution`` cells, at each of ``angles`` (radians); the window is
    centred on the line up to a random sub-cell offset (``seed``). Returns (len(angles),)."""
    from .zoom import zoom_series

    rng = np.random.default_rng(seed)
    out = []
    for theta in angles:
        normal = np.array([-math.sin(theta), math.cos(theta)])
        shift = rng.uniform(-0.5, 0.5, 2) / resolution
        level = zoom_series(lambda q, nrm=normal: (q @ nrm > 0).astype(np.int64),
                            shift, 1.0, zooms=(1.0,), resolution=resolution, refine=refine)[0]
        out.append(level.dimension)
    return np.asarray(out)


def koch_zoom_dimensions(resolution: int = 32, centres: Sequence[int] = (1, 2, 5, 22, 37),
                         widths: Sequence[float] = (0.3, 0.1), refine: int = 3,
                         depth: int = 12) -> np.ndarray:
    """Dimension read by :func:`~latentatlas.geometry.zoom.zoom_series` on Koch-snowflake windows
    centred on the curve: the vertices ``centres`` of the level-3 polyline (on the limit curve),
    windows of ``widths`` (the flake's side is 1). Returns (len(centres), len(widths))."""
    from .zoom import zoom_series

    verts = koch_polyline(3)
    out = np.empty((len(centres), len(widths)))
    for i, c in enumerate(centres):
        levels = zoom_series(lambda q: koch_inside(q, depth), verts[c], 1.0,
                             zooms=tuple(1.0 / w for w in widths), resolution=resolution,
                             refine=refine)
        out[i] = [lv.dimension for lv in levels]
    return out
