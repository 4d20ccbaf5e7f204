"""Boundaries, phases and fractal dimension from gridded fields (e.g. sqrt(det g)).

- :func:`ridges`: boundary map. A pixel is on a ridge when (1) the smoothed field ``f`` (by default
  ``log field``) curves down across some direction (the smallest eigenvalue of its Hessian is < 0),
  (2) it is a local maximum of ``f`` along that direction (neighbours at +-1 pixel along the
  eigenvector, bilinear interpolation), and (3) ``f`` is high: above ``median(f) + c * 1.4826 *
  MAD(f)`` (a robust z-score; the metric is flat inside phases and peaks at boundaries, so the bulk
  of the pixels sets median and MAD) and above ``median + rel * (max(f) - median)``. On the outer
  one-pixel frame of the grid (padded differences) ridges are only continued from the pixel inside. This is the classical ridge (crest line) definition
  (Eberly et al. 1994) restricted to salient crests; it gives one-pixel-wide lines that need no
  skeletonisation.
- :func:`phases`: connected regions between boundaries (4-connected, so a one-pixel boundary line
  that is only 8-connected still separates two regions).
- :func:`box_counting_dimension`: least-squares slope of ``log N(s)`` against ``log(1 / s)`` over
  box sizes ``s`` (on the pixels of a mask, or on a point set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["box_counting_dimension", "phases", "ridges"]


def _field(field: Any, name: str = "field") -> np.ndarray:
    f = np.asarray(field.detach().cpu() if hasattr(field, "detach") else field, dtype=np.float64)
    if f.ndim != 2 or min(f.shape) < 3:
        raise ValueError(f"{name}: expected a 2-D array of at least 3 x 3, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: expected finite values, got {int((~np.isfinite(f)).sum())} NaN/inf")
    return f


def ridges(
    field: Any,
    smooth: float = 1.0,
    log: bool = True,
    c: float = 3.0,
    rel: float = 0.1,
    threshold: float | None = None,
) -> np.ndarray:
    """Boundary mask from the ridges (crest lines) of a field, e.g. ``sqrt(det g)`` on the grid.

    Args:
        field: (G0, G1) field (positive if ``log``).
        smooth: Gaussian pre-smoothing width in pixels (0: none).
        log: use ``log(field)`` (the metric varies over orders of magnitude).
        c: robust z-score a ridge pixel must exceed (ignored if ``threshold`` is given).
        rel: and it must rise above the median by at least this fraction of ``max(f) - median``
            (when the bulk is perfectly flat its MAD is ~0 and noise would pass the z-score).
        threshold: explicit threshold on the (log, smoothed) field.

    Returns:
        (G0, G1) boolean mask, True on ridge pixels.
    """
    f = _field(field)
    if log:
        if (f <= 0).any():
            raise ValueError(
                f"field: expected positive values for log=True, got min {f.min():.4g}; pass log=False"
            )
        f = np.log(f)
    if smooth < 0:
        raise ValueError(f"smooth: expected >= 0 pixels, got {smooth!r}")
    if smooth > 0:
        f = ndimage.gaussian_filter(f, smooth, mode="nearest")
    # 3-point stencils: only the outer one-pixel frame uses padded values
    fp = np.pad(f, 1, mode="edge")
    c0 = fp[1:-1, 1:-1]
    f00 = fp[2:, 1:-1] - 2 * c0 + fp[:-2, 1:-1]
    f11 = fp[1:-1, 2:] - 2 * c0 + fp[1:-1, :-2]
    f01 = 0.25 * (fp[2:, 2:] - fp[2:, :-2] - fp[:-2, 2:] + fp[:-2, :-2])
    hess = np.stack([np.stack([f00, f01], -1), np.stack([f01, f11], -1)], -2)
    evals, evecs = np.linalg.eigh(hess)
    lam, n = evals[..., 0], evecs[..., :, 0]  # most negative curvature and its direction
    ii, jj = np.meshgrid(np.arange(f.shape[0]), np.arange(f.shape[1]), indexing="ij")
    plus = ndimage.map_coordinates(f, [ii + n[..., 0], jj + n[..., 1]], order=1, mode="nearest")
    minus = ndimage.map_coordinates(f, [ii - n[..., 0], jj - n[..., 1]], order=1, mode="nearest")
    if threshold is None:
        med = np.median(f)
        threshold = med + max(c * 1.4826 * np.median(np.abs(f - med)), rel * (f.max() - med))
    mask = (lam < 0) & (f >= plus) & (f >= minus) & (f > threshold)
    # padded differences on the outer frame make spurious crests there: the frame only continues
    # the ridges that reach it (so that a boundary line cuts the grid all the way to its edge)
    mask[0, :], mask[-1, :] = mask[1, :], mask[-2, :]
    mask[:, 0], mask[:, -1] = mask[:, 1], mask[:, -2]
    return mask


def phases(boundary_mask: Any, min_size: int = 0) -> np.ndarray:
    """Label the connected regions between boundaries.

    Args:
        boundary_mask: (G0, G1) boolean, True on boundaries.
        min_size: regions with fewer pixels are merged into the boundary (label 0).

    Returns:
        (G0, G1) int labels: 0 on boundaries, 1..n for the regions (largest region first).
    """
    m = np.asarray(boundary_mask)
    if m.ndim != 2:
        raise ValueError(f"boundary_mask: expected a 2-D boolean array, got shape {m.shape}")
    labels, n = ndimage.label(~m.astype(bool))  # default structure: 4-connectivity
    if n == 0:
        return labels
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    remap = np.zeros(n + 1, dtype=labels.dtype)
    k = 0
    for idx in order:
        if sizes[idx] >= max(min_size, 1):
            k += 1
            remap[idx + 1] = k
    return remap[labels]


def box_counting_dimension(
    obj: Any, scales: Any = None, offsets: int = 4
) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Box-counting (Minkowski) dimension of a mask or a point set.

    Args:
        obj: a (H, W) boolean mask (boxes of ``s`` pixels), or (N, 2) points (boxes of side ``s``
            in the points' units, on a grid anchored at the points' lower-left corner).
        scales: box sizes. Default: for a mask ``2, 4, ...`` up to ``min(H, W) / 8`` pixels (one-
            pixel boxes over-count a rasterised line, boxes near the image size give few counts);
            for points ``extent * 2**-k`` for ``k = 3 .. floor(log2(N) / 2) + 2``.
        offsets: the box grid is shifted by ``k / offsets`` of a box along each axis
            (``offsets**2`` grids) and the counts are averaged (this removes most of the
            oscillation of the counts caused by the grid's alignment with the set).

    Returns:
        ``(dimension, (sizes, counts))``: the least-squares slope of ``log counts`` against
        ``-log sizes``, and the box sizes and counts used.
    """
    arr = np.asarray(obj.detach().cpu() if hasattr(obj, "detach") else obj)
    if arr.dtype == bool:
        if arr.ndim != 2:
            raise ValueError(f"obj: expected a 2-D mask, got shape {arr.shape}")
        pts = np.argwhere(arr).astype(np.float64)
        if scales is None:
            kmax = int(np.floor(np.log2(min(arr.shape) / 8)))
            scales = 2.0 ** np.arange(1, max(kmax, 2) + 1)
        origin = np.zeros(2)
    else:
        pts = np.asarray(arr, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"obj: expected a boolean mask or (N, 2) points, got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("obj: expected finite point coordinates")
        origin = pts.min(axis=0) if len(pts) else np.zeros(2)
        if scales is None:
            extent = float((pts.max(axis=0) - origin).max()) if len(pts) else 0.0
            kmax = max(4, int(np.floor(np.log2(max(len(pts), 2)) / 2)) + 2)
            scales = (extent if extent > 0 else 1.0) * 2.0 ** -np.arange(3, kmax + 1)
    if len(pts) == 0:
        raise ValueError("obj: the mask / point set is empty")
    sizes = np.asarray(scales, dtype=np.float64).reshape(-1)
    if sizes.size < 2 or (sizes <= 0).any():
        raise ValueError(f"scales: expected at least 2 positive box sizes, got {sizes.tolist()}")
    if not isinstance(offsets, int) or offsets < 1:
        raise ValueError(f"offsets: expected a positive int, got {offsets!r}")
    shifts = np.arange(offsets) / offsets
    rel = pts - origin

    def count(s: float, dx: float, dy: float) -> int:
        ij = np.floor(rel / s + [dx, dy]).astype(np.int64)
        key = ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]  # one integer per box
        return len(np.unique(key))

    counts = np.array(
        [np.mean([count(s, dx, dy) for dx in shifts for dy in shifts]) for s in sizes]
    )
    slope = np.polyfit(-np.log(sizes), np.log(counts), 1)[0]
    return float(slope), (sizes, counts)
