"""Zoom series around a boundary point: does new structure keep appearing at finer scales?

At each zoom level ``z`` a square window of width ``width / z`` centred on the point is labelled on
a ``resolution x resolution`` grid (e.g. by a classifier of the generated images). The class
boundary is the set of grid cells whose label differs from a neighbour's; its box-counting
dimension and the number of classes in the window are recorded. A smooth boundary looks like a
straight line once zoomed (dimension -> 1, two classes); a fractal one keeps its dimension above 1
and keeps showing several classes at every zoom (Lobashev et al. report self-similar switching down
to windows of ~1e-8 for Stable Diffusion).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ZoomLevel", "boundary_mask", "zoom_series"]


@dataclass
class ZoomLevel:
    """One window of a zoom series.

    Attributes:
        zoom: magnification relative to the base width.
        bounds: ((lo0, hi0), (lo1, hi1)) of the window.
        labels: (R, R) class labels on the window's grid.
        boundary_fraction: fraction of grid cells on the class boundary.
        dimension: box-counting dimension of the boundary cells (nan if fewer than 2 classes).
        classes: number of distinct labels in the window.
    """

    zoom: float
    bounds: tuple[tuple[float, float], tuple[float, float]]
    labels: np.ndarray
    boundary_fraction: float
    dimension: float
    classes: int


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Cells whose label differs from the right or lower neighbour. (G0, G1) -> (G0, G1) bool."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected a 2-D array, got shape {labels.shape}")
    mask = np.zeros(labels.shape, dtype=bool)
    mask[:-1] |= labels[:-1] != labels[1:]
    mask[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return mask


def zoom_series(
    label_fn: Callable[[np.ndarray], np.ndarray],
    center: Sequence[float],
    width: float,
    zooms: Sequence[float] = tuple(10.0 ** np.arange(0, 7)),
    resolution: int = 64,
    scales: Sequence[int] | None = None,
) -> list[ZoomLevel]:
    """Label windows of decreasing width around ``center`` and measure the class boundary.

    Args:
        label_fn: maps parameter points (B, 2) float64 to integer labels (B,).
        center: (2,) the point to zoom into (e.g. a point on a metric ridge).
        width: window width at zoom 1.
        zooms: magnifications (window width = width / zoom).
        resolution: grid cells per side (>= 8).
        scales: box sizes in cells for the box-counting fit (default: that of
            :func:`~latentatlas.geometry.boundaries.box_counting_dimension`); use powers of 3 for
            triadic fractals such as the Koch curve, whose counts oscillate log-periodically.

    Returns:
        One :class:`ZoomLevel` per zoom.
    """
    from .boundaries import box_counting_dimension

    center = np.asarray(center, dtype=np.float64).reshape(-1)
    if center.shape != (2,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center: expected two finite coordinates, got {center}")
    if not width > 0:
        raise ValueError(f"width: expected a positive number, got {width!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution: expected an int >= 8, got {resolution!r}")
    levels = []
    offsets = (np.arange(resolution) + 0.5) / resolution - 0.5
    for zoom in zooms:
        if not zoom > 0:
            raise ValueError(f"zooms: expected positive magnifications, got {zoom!r}")
        w = width / zoom
        a0, a1 = center[0] + w * offsets, center[1] + w * offsets
        grid = np.stack(np.meshgrid(a0, a1, indexing="ij"), axis=-1).reshape(-1, 2)
        labels = np.asarray(label_fn(grid)).reshape(resolution, resolution)
        mask = boundary_mask(labels)
        classes = int(len(np.unique(labels)))
        dim = float(box_counting_dimension(mask, scales=scales)[0]) if classes > 1 and mask.sum() > 4 else np.nan
        bounds = ((a0[0] - w / (2 * resolution), a0[-1] + w / (2 * resolution)),
                  (a1[0] - w / (2 * resolution), a1[-1] + w / (2 * resolution)))
        levels.append(ZoomLevel(float(zoom), bounds, labels, float(mask.mean()), dim, classes))
    return levels
