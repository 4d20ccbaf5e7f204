"""Zoom series around a boundary point: does new structure keep appearing at finer scales?

At each zoom level ``z`` a square window of width ``width / z`` centred on the point is labelled on
a ``resolution x resolution`` grid (e.g. by a classifier of the generated images). The class
boundary is the set of grid cells whose label differs from a neighbour's; its box-counting
dimension and the number of classes in the window are recorded. A smooth boundary looks like a
straight line once zoomed (dimension -> 1, two classes); a fractal one keeps its dimension above 1
and keeps showing several classes at every zoom (Lobashev et al. report self-similar switching down
to windows of ~1e-8 for Stable Diffusion).

Box counting in a small window. Counting boxes of 2 and 4 cells on a 32-cell mask (the only sizes
such a window offers) reads a straight line as 0.80-0.88: a digitised curve of length ``L`` cells
meets ``N(s) ~ L / s + b`` boxes, and the window's edges make ``b`` comparable to ``L / s``. The
default estimator therefore refines the window instead (quadtree): boxes are the squares between
four neighbouring grid points; a box is on the boundary when its corner labels differ; every
boundary box and its 8 neighbours are split in four and their new corners labelled, ``refine``
times. ``N(n)`` is the number of boundary boxes at ``n = (resolution - 1) 2**k`` boxes per side,
and the dimension is the slope of ``log N`` against ``log n``. A line gives ``N = a n + O(1)``
with ``a n >= 16`` boxes at the coarsest level, so the edge term costs < 0.03 of slope; the cost is
``O(n**D)`` labels per level instead of ``n**2``. Structure finer than a box that does not touch
the refined band is missed (as by any grid). When a window cannot support a slope (one class, fewer
than ``min_boxes`` boundary boxes at the coarsest level, fewer than three levels) the level is
flagged ``measurable = False`` and its dimension is NaN: never a number from two box sizes.
Calibration (``benchmarks/calibration.py``, tests/test_zoom_calibration.py): lines at any angle
read 1.00 within 0.02 and Koch-curve windows log 4 / log 3 within 0.06 at the pipeline's window.

The labels must be exact at the window's scale: a labeler that rounds its input (a float32
classifier on float64 images) makes a smooth boundary rough below its rounding, and deep windows
read that as structure (``latentatlas.analyses.plane_tools.label_fn`` runs torch labelers in
float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ZoomLevel", "boundary_mask", "refined_box_counts", "zoom_series"]

_NEIGHBOURS = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.int64)
_QUAD = np.array([(0, 0), (0, 1), (1, 0), (1, 1)], dtype=np.int64)


@dataclass
class ZoomLevel:
    """One window of a zoom series.

    Attributes:
        zoom: magnification relative to the base width.
        bounds: ((lo0, hi0), (lo1, hi1)) of the window.
        labels: (R, R) class labels on the window's grid.
        boundary_fraction: fraction of grid cells on the class boundary.
        dimension: box-counting dimension of the boundary (NaN when not ``measurable``).
        classes: number of distinct labels in the window (every labelled point, refined ones too).
        measurable: whether the window supports a slope (see the module docstring).
        boxes: (m,) boxes per window side of the box counts (refined estimator: ``(R - 1) 2**k``;
            legacy ``scales``: ``R / s``).
        counts: (m,) boundary boxes at each of ``boxes``.
        evaluations: labels computed for the window (``R**2`` plus the refinement).
    """

    zoom: float
    bounds: tuple[tuple[float, float], tuple[float, float]]
    labels: np.ndarray
    boundary_fraction: float
    dimension: float
    classes: int
    measurable: bool = True
    boxes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    evaluations: int = 0


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Cells whose label differs from the right or lower neighbour. (G0, G1) -> (G0, G1) bool."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected a 2-D array, got shape {labels.shape}")
    mask = np.zeros(labels.shape, dtype=bool)
    mask[:-1] |= labels[:-1] != labels[1:]
    mask[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return mask


def _keys(ij: np.ndarray, side: int) -> np.ndarray:
    return ij[:, 0] * (side + 1) + ij[:, 1]


def refined_box_counts(
    label_fn: Callable[[np.ndarray], np.ndarray],
    origin: Sequence[float],
    spacing: float,
    labels: np.ndarray,
    refine: int = 3,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Boundary-box counts of a labelled square grid refined by quadtree ``refine`` times.

    Args:
        label_fn: maps points (B, 2) float64 to labels (B,).
        origin: (2,) coordinates of grid point (0, 0).
        spacing: distance between neighbouring grid points.
        labels: (R, R) labels at ``origin + spacing * (i, j)``.
        refine: refinement levels (each halves the box side).

    Returns:
        ``(boxes, counts, evaluations, classes)``: (refine + 1,) boxes per side ``(R - 1) 2**k``,
        (refine + 1,) boundary boxes at each level, labels computed, distinct labels seen.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != labels.shape[1] or labels.shape[0] < 2:
        raise ValueError(f"labels: expected a square (R, R) grid with R >= 2, got {labels.shape}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine: expected a non-negative int, got {refine!r}")
    origin = np.asarray(origin, dtype=np.float64).reshape(2)
    side = labels.shape[0] - 1  # boxes per side at level 0
    ii, jj = np.meshgrid(np.arange(side + 1), np.arange(side + 1), indexing="ij")
    known_ij = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.int64)
    known_lab = labels.ravel()
    classes = set(np.unique(known_lab).tolist())
    evaluations = 0

    def corner_labels(boxes: np.ndarray, keys: np.ndarray, labs: np.ndarray, n: int) -> np.ndarray:
        corners = (boxes[:, None, :] + _QUAD[None]).reshape(-1, 2)
        idx = np.searchsorted(keys, _keys(corners, n))
        return labs[idx].reshape(len(boxes), 4)

    bi, bj = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    boxes = np.stack([bi.ravel(), bj.ravel()], axis=1).astype(np.int64)
    order = np.argsort(_keys(known_ij, side))
    keys, labs = _keys(known_ij, side)[order], known_lab[order]
    c = corner_labels(boxes, keys, labs, side)
    on = boxes[(c != c[:, :1]).any(axis=1)]
    sides, counts = [side], [len(on)]
    n = side
    for _ in range(refine):
        if len(on) == 0:
            sides.append(2 * n)
            counts.append(0)
            n *= 2
            continue
        band = (on[:, None, :] + _NEIGHBOURS[None]).reshape(-1, 2)
        band = band[((band >= 0) & (band < n)).all(axis=1)]
        band = np.unique(band, axis=0)
        n *= 2
        known_ij = known_ij * 2
        children = (2 * band[:, None, :] + _QUAD[None]).reshape(-1, 2)
        corners = np.unique((children[:, None, :] + _QUAD[None]).reshape(-1, 2), axis=0)
        order = np.argsort(_keys(known_ij, n))
        keys, labs = _keys(known_ij, n)[order], known_lab[order]
        pos = np.searchsorted(keys, _keys(corners, n))
        pos = np.minimum(pos, len(keys) - 1)
        new = corners[keys[pos] != _keys(corners, n)]
        if len(new):
            pts = origin + new.astype(np.float64) * (spacing * side / n)
            new_lab = np.asarray(label_fn(pts)).reshape(len(new))
            evaluations += len(new)
            classes.update(np.unique(new_lab).tolist())
            known_ij = np.concatenate([known_ij, new])
            known_lab = np.concatenate([known_lab, new_lab.astype(known_lab.dtype, copy=False)])
            order = np.argsort(_keys(known_ij, n))
            keys, labs = _keys(known_ij, n)[order], known_lab[order]
        c = corner_labels(children, keys, labs, n)
        on = children[(c != c[:, :1]).any(axis=1)]
        sides.append(n)
        counts.append(len(on))
    return (np.asarray(sides, dtype=np.float64), np.asarray(counts, dtype=np.float64),
            evaluations, len(classes))


def zoom_series(
    label_fn: Callable[[np.ndarray], np.ndarray],
    center: Sequence[float],
    width: float,
    zooms: Sequence[float] = tuple(10.0 ** np.arange(0, 7)),
    resolution: int = 32,
    scales: Sequence[int] | None = None,
    refine: int = 3,
    min_boxes: int = 16,
) -> list[ZoomLevel]:
    """Label windows of decreasing width around ``center`` and measure the class boundary.

    Args:
        label_fn: maps parameter points (B, 2) float64 to integer labels (B,).
        center: (2,) the point to zoom into (e.g. a point on a metric ridge).
        width: window width at zoom 1.
        zooms: magnifications (window width = width / zoom).
        resolution: grid cells per side (>= 8).
        scales: None (default): the refined estimator of the module docstring. Or box sizes in
            cells (at least 3, the largest <= resolution / 4) for plain box counting of the
            (R, R) boundary mask with
            :func:`~latentatlas.geometry.boundaries.box_counting_dimension` (no refinement; powers
            of 3 suit triadic fractals such as the Koch curve on large windows).
        refine: quadtree levels of the refined estimator (>= 2 for a measurable slope).
        min_boxes: boundary boxes needed at the coarsest level for a measurable slope.

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
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine: expected a non-negative int, got {refine!r}")
    if isinstance(min_boxes, bool) or not isinstance(min_boxes, int) or min_boxes < 1:
        raise ValueError(f"min_boxes: expected a positive int, got {min_boxes!r}")
    if scales is not None:
        sizes = np.asarray(scales, dtype=np.float64).reshape(-1)
        if sizes.size < 3 or (sizes <= 0).any() or sizes.max() > resolution / 4:
            raise ValueError(f"scales: expected at least 3 positive box sizes up to resolution / 4 "
                             f"= {resolution / 4:g} cells, got {sizes.tolist()}")
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
        evaluations = resolution**2
        if scales is not None:
            ok = classes > 1 and mask.sum() > 4
            dim, (sz, counts) = box_counting_dimension(mask, scales=scales) if ok else (
                np.nan, (np.asarray(scales, np.float64), np.zeros(len(sizes))))
            boxes = resolution / np.asarray(sz, np.float64)
        else:
            boxes, counts, extra, classes = refined_box_counts(
                label_fn, (a0[0], a1[0]), w / resolution, labels, refine)
            evaluations += extra
            ok = classes > 1 and len(boxes) >= 3 and counts[0] >= min_boxes
            dim = float(np.polyfit(np.log(boxes), np.log(counts), 1)[0]) if ok else np.nan
        bounds = ((a0[0] - w / (2 * resolution), a0[-1] + w / (2 * resolution)),
                  (a1[0] - w / (2 * resolution), a1[-1] + w / (2 * resolution)))
        levels.append(ZoomLevel(float(zoom), bounds, labels, float(mask.mean()),
                                float(dim) if ok else float("nan"), int(classes), bool(ok),
                                np.asarray(boxes, np.float64), np.asarray(counts, np.float64),
                                int(evaluations)))
    return levels
